"""The repository stands on its own: users have only the clone, so no project file may read a sibling folder."""

from pathlib import Path

from tasks.base import REPO_ROOT

SKIPPED_DIRS = {".git", ".venv", "runs", "lightning_logs", "__pycache__", "build", "checkpoints"}  # as .gitignore


def project_files(root: Path) -> list[Path]:
    files = []
    for path in root.iterdir():
        if path.name in SKIPPED_DIRS or path.name.endswith(".egg-info"):
            continue
        files += project_files(path) if path.is_dir() else [path]
    return files


def test_no_project_file_names_the_development_machines_shared_folder():
    needle = "../" + "shared"  # split, so this file does not name it either
    offenders = []
    for path in project_files(REPO_ROOT):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary (events files, images): not configs or code
            continue
        offenders += [f"{path.relative_to(REPO_ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert offenders == [], f"project files that name {needle} (users have no such folder): {offenders}"


def test_the_scan_sees_code_configs_and_docs():
    names = {path.relative_to(REPO_ROOT).as_posix() for path in project_files(REPO_ROOT)}
    assert {"cli.py", "README.md", ".ci/run", "configs/tripost/word_sorting_tiny.yaml",
            "tasks/data/bigbench/word_sorting.json", "tests/test_repository.py"} <= names


def test_an_installed_copy_carries_the_bigbench_files_as_package_data():
    from fnmatch import fnmatch

    import tomllib

    from tasks.base import BIGBENCH_DIR

    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tasks"]
    shipped = sorted(p.relative_to(REPO_ROOT / "tasks").as_posix() for p in (REPO_ROOT / BIGBENCH_DIR).iterdir())
    assert {"data/bigbench/word_sorting.json", "data/bigbench/LICENSE", "data/bigbench/README.md"} <= set(shipped)
    missing = [name for name in shipped if not any(fnmatch(name, glob) for glob in globs)]
    assert missing == [], f"files under {BIGBENCH_DIR} that a non-editable install would leave out: {missing}"
