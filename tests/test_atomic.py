import pytest

from src.atomic import atomic_dir


def test_published_whole_and_a_failed_fill_leaves_nothing(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"


def test_the_first_publisher_wins_a_race_and_the_loser_cleans_up(tmp_path):
    target = tmp_path / "entry"
    with atomic_dir(target) as slow:
        (slow / "a.txt").write_text("slow")
        with atomic_dir(target) as fast:  # finishes while the other is still filling
            (fast / "a.txt").write_text("fast")
    assert (target / "a.txt").read_text() == "fast"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_a_file_is_replaced_whole_readable_by_all_and_a_failed_write_keeps_the_old(tmp_path):
    from src.atomic import atomic_file

    target = tmp_path / "sub" / "results.json"
    with atomic_file(target) as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]
    assert target.stat().st_mode & 0o777 == 0o644
    with atomic_file(target, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_a_killed_writers_folder_is_removed_and_a_live_ones_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from src.atomic import atomic_dir

    target = tmp_path / "cohort"
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".cohort.tmp-{host}-{dead}-abc123"
    live = tmp_path / f".cohort.tmp-{host}-{os.getpid()}-def456"
    other = tmp_path / ".other.tmp-x-1-zzz"  # another entry's: not ours to judge
    for d in (stale, live, other):
        d.mkdir()
        (d / "part.parquet").write_bytes(b"x" * 10)
    with atomic_dir(target) as tmp:
        (tmp / "data").write_text("ok")
    assert not stale.exists() and live.exists() and other.exists()
    assert (target / "data").read_text() == "ok"
    assert [p.name for p in tmp_path.glob(".cohort.tmp-*")] == [live.name]
