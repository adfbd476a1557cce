"""The shared slots through which `serve --workers N` spreads its connections (balance.py):
real files, real processes. The balancing itself, on a real server: test_serving_redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.serving.balance import Slots


def _slots_file(tmp_path: Path, workers: int) -> Path:
    path = tmp_path / "serve.slots"
    path.write_bytes(bytes(16 * workers))
    return path


def test_each_worker_claims_its_own_slot_and_counts_in_the_share(tmp_path: Path) -> None:
    path = _slots_file(tmp_path, 2)
    first, second = Slots(path), Slots(path)
    first.publish(6)
    second.publish(2)
    # 8 connections over 2 workers: 4 each; the worker with 6 is over its share.
    assert first.over_share(6) and not second.over_share(2)
    first.publish(5)
    second.publish(3)
    assert first.over_share(5) and not first.over_share(4)
    first.publish(4)
    second.publish(3)
    # 7: a share of 4 (rounded up), nobody over it.
    assert not first.over_share(4) and not second.over_share(3)


def test_a_replacement_worker_takes_the_slot_of_one_that_died(tmp_path: Path) -> None:
    path = _slots_file(tmp_path, 2)
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from mlplatform.serving.balance import Slots; "
         "Slots(Path(sys.argv[1])).publish(7)", str(path)],
        check=True,
    )  # fmt: skip
    alive = Slots(path)
    alive.publish(1)
    replacement = Slots(path)  # the dead worker's 7 connections are gone with it
    replacement.publish(1)
    assert not alive.over_share(1) and not replacement.over_share(1)
    with pytest.raises(RuntimeError, match=rf"{path}: all 2 worker slots are taken"):
        Slots(path)
