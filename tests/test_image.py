"""The container image (`Dockerfile`), checked where no Docker engine runs: hadolint passes it,
every path it copies or runs is in the repo, its install is the lock's, and each role its
command selects starts, outside Docker, with the same command (`platform/entrypoint.sh`) and
passes the image's own health check."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    REPO,
    TrainedPlatform,
    free_port,
    process_group,
    wait_until,
)

pytestmark = pytest.mark.e2e

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "platform" / "entrypoint.sh"
ROLES = ("webserver", "daemon", "code-server", "api")


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _in_repo(image_path: str) -> Path:
    """The repo file that the image holds at ``image_path`` (the image's WORKDIR is /app)."""
    return REPO / Path(image_path).relative_to("/app")


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([str(BIN / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_path_the_image_copies_or_runs_is_in_the_repo_and_the_lock_installs() -> None:
    instructions = _instructions()
    copied = [
        source
        for kind, args in instructions
        if kind == "COPY" and "--from=" not in args
        for source in shlex.split(args)[:-1]
    ]
    assert {"pyproject.toml", "uv.lock", "mlplatform", "platform"} <= set(copied)
    assert all((REPO / source).exists() for source in copied), copied
    (entrypoint,) = [json.loads(args) for kind, args in instructions if kind == "ENTRYPOINT"]
    health = next(args for kind, args in instructions if kind == "HEALTHCHECK")
    assert entrypoint == ["/app/platform/entrypoint.sh"]
    assert json.loads(health.split("CMD", 1)[1]) == [*entrypoint, "healthcheck"]
    assert os.access(_in_repo(entrypoint[0]), os.X_OK)
    (command,) = [json.loads(args) for kind, args in instructions if kind == "CMD"]
    assert command[0] in ROLES
    # What the image runs to install: the lock, without the dev group, nothing to resolve.
    syncs = [args for kind, args in instructions if kind == "RUN" and args.startswith("uv sync")]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    done = subprocess.run(
        [str(BIN / "uv"), "sync", "--frozen", "--no-dev", "--dry-run"], cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_unknown_role_gets_the_usage_a_command_runs_and_no_role_fails_the_health_check(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    unknown = subprocess.run(
        [str(ENTRYPOINT), "scheduler"], capture_output=True, text=True, env=env
    )
    assert unknown.returncode == 64 and "usage: entrypoint.sh webserver|daemon" in unknown.stderr
    # What run launchers and the Helm chart pass: a command of the image, run as given.
    command = subprocess.run(
        [str(ENTRYPOINT), "dagster", "api", "--help"], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert command.returncode == 0 and "execute_run" in command.stdout, command.stderr
    health = subprocess.run(
        [str(ENTRYPOINT), "healthcheck"], capture_output=True, text=True, env=env
    )
    assert health.returncode == 1 and "no role started in this container" in health.stderr


@pytest.mark.parametrize("role", ROLES)
def test_each_role_starts_with_the_images_command_and_passes_its_health_check(
    role: str,
    trained_platform: TrainedPlatform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform = trained_platform.copy(tmp_path / "platform")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **platform.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch),
        "MLPLATFORM_BIND": "127.0.0.1", "MLPLATFORM_API_KEYS": "image-test-key",
        "DAGSTER_WEBSERVER_PORT": str(free_port()), "DAGSTER_GRPC_PORT": str(free_port()),
        "MLPLATFORM_SERVE_PORT": str(free_port()),
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = platform.home / "online" / "store.duckdb"  # what the API serves features from
    store.parent.mkdir()
    store.write_bytes((platform.home / "warehouse.duckdb").read_bytes())
    log = tmp_path / f"{role}.log"

    def healthy() -> bool:
        assert process.poll() is None, f"the {role} role exited:\n{log.read_text()[-3000:]}"
        check = subprocess.run(
            [str(ENTRYPOINT), "healthcheck"], capture_output=True, text=True, timeout=60
        )
        return check.returncode == 0

    with process_group([str(ENTRYPOINT), role], log) as process:
        wait_until(healthy, f"the {role} role to pass the health check", log=log)
        assert process.poll() is None  # it serves; the health check did not just run once
    assert (scratch / "mlplatform-role").read_text().strip() == role
