"""Data preparation: sub-image coverage and alignment, LR, LMDB layout and safety, checks, the div2k recipe, CLI."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from conftest import child_pids, dead_pid, process_running, shared_path
from mlkasr.cli import main
from mlkasr.data import (
    DataError,
    LmdbImageReader,
    LmdbWriter,
    LrCut,
    SubImageGrid,
    check_lmdb,
    extract_subimages,
    generate_lr,
    grid_windows,
    pack_folder,
    prepare_div2k,
    read_meta_info,
    window_starts,
)
from mlkasr.imaging.io import list_images, read_image, write_image
from mlkasr.imaging.resize import make_lr


def textured(h: int, w: int, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    return rng.integers(0, peak + 1, size=(h, w, c), dtype=np.int64).astype(dtype)


def bsd_subset(tmp_path: Path, n: int) -> Path:
    """The first ``n`` BSD200 images of the shared 291-image set, copied into tmp_path/HR."""
    source = shared_path("train", "BSD200")
    folder = tmp_path / "HR"
    folder.mkdir()
    for path in list_images(source)[:n]:
        shutil.copy(path, folder / path.name)
    return folder


# -- geometry ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,size,step,align", [(1000, 480, 240, 1), (1356, 480, 240, 12), (481, 480, 240, 1),
                                                    (479, 480, 240, 4), (2040, 480, 240, 12), (97, 16, 7, 1)])
def test_windows_cover_the_aligned_length_and_start_aligned(length, size, step, align):
    starts, window = window_starts(length, size, step, align)
    usable = length - length % align
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered[:usable].all() and not covered[usable:].any()
    assert all(s % align == 0 for s in starts)
    assert starts[-1] + window == usable  # the last window is flush to the (aligned) border
    assert all(b - a <= step for a, b in zip(starts, starts[1:]))


def test_subimage_size_and_step_must_be_multiples_of_the_scales():
    with pytest.raises(DataError, match="multiples of 12"):
        SubImageGrid.for_scales(480, 250, [3, 4])


def test_subimages_reassemble_the_whole_image(tmp_path):
    hr = bsd_subset(tmp_path, 2)
    report = extract_subimages(hr, tmp_path / "sub", size=200, step=150, workers=1, progress=False)
    assert report.images == 2
    for path in list_images(hr):
        image = read_image(path)
        canvas = np.zeros_like(image)
        filled = np.zeros(image.shape[:2], bool)
        windows = grid_windows(*image.shape[:2], SubImageGrid(200, 150))
        for index, window in enumerate(windows):
            sub = read_image(tmp_path / "sub" / f"{path.stem}_s{index + 1:03d}.png")
            assert sub.shape == (window.height, window.width, image.shape[2])
            canvas[window.top : window.top + window.height, window.left : window.left + window.width] = sub
            filled[window.top : window.top + window.height, window.left : window.left + window.width] = True
        assert filled.all()
        np.testing.assert_array_equal(canvas, image)
    assert report.subimages == len(list_images(tmp_path / "sub"))


def test_lr_subimages_are_the_lr_of_their_hr_subimages(tmp_path):
    """Windows aligned to lcm(2,3,4): LR sub = crop of the full LR, and equals make_lr(HR sub) away from its border."""
    hr_dir = tmp_path / "HR"
    write_image(hr_dir / "0001.png", textured(203, 310, seed=1))  # sides not multiples of 12
    generate_lr(hr_dir, tmp_path / "LR", [3, 4], workers=1, progress=False)
    cuts = [LrCut(tmp_path / "LR" / f"X{s}", tmp_path / f"X{s}_sub", s) for s in (3, 4)]
    extract_subimages(hr_dir, tmp_path / "HR_sub", size=96, step=48, lr=cuts, workers=2, progress=False)
    hr_subs = list_images(tmp_path / "HR_sub")
    assert [p.name for p in hr_subs] == [p.name for p in list_images(tmp_path / "X4_sub")]  # x4 suffix stripped
    full = read_image(hr_dir / "0001.png")
    for s in (3, 4):
        full_lr = make_lr(full, s)
        for index, window in enumerate(grid_windows(203, 310, SubImageGrid.for_scales(96, 48, [3, 4]))):
            lr_sub = read_image(tmp_path / f"X{s}_sub" / f"0001_s{index + 1:03d}.png")
            np.testing.assert_array_equal(lr_sub, window.scaled_down(s).cut(full_lr))
            hr_sub = read_image(tmp_path / "HR_sub" / f"0001_s{index + 1:03d}.png")
            assert hr_sub.shape[:2] == (lr_sub.shape[0] * s, lr_sub.shape[1] * s)
            np.testing.assert_array_equal(make_lr(hr_sub, s)[3:-3, 3:-3], lr_sub[3:-3, 3:-3])


def test_lr_subimages_refuse_an_lr_image_of_the_wrong_size(tmp_path):
    write_image(tmp_path / "HR" / "a.png", textured(64, 64))
    write_image(tmp_path / "LR" / "ax4.png", textured(15, 16))
    with pytest.raises(DataError, match=r"ax4.png: LR is 16x15 \(WxH\), expected 16x16"):
        extract_subimages(tmp_path / "HR", tmp_path / "sub", 32, 16, [LrCut(tmp_path / "LR", tmp_path / "lsub", 4)],
                          workers=1, progress=False)
    assert not (tmp_path / "sub").exists() and not (tmp_path / "lsub").exists()


def test_generate_lr_is_make_lr_with_div2k_names(tmp_path):
    hr = bsd_subset(tmp_path, 3)
    generate_lr(hr, tmp_path / "LR", [2, 4], workers=2, progress=False)
    for path in list_images(hr):
        for s in (2, 4):
            np.testing.assert_array_equal(read_image(tmp_path / "LR" / f"X{s}" / f"{path.stem}x{s}.png"),
                                          make_lr(read_image(path), s))


# -- LMDB ----------------------------------------------------------------------------------------------------------
def test_lmdb_round_trip_is_bit_exact_with_basicsr_meta_info(tmp_path):
    images = {"rgb_s001": textured(40, 50, 3, 1), "grey": textured(33, 21, 1, 2), "rgba": textured(10, 12, 4, 3),
              "deep": textured(9, 8, 3, 4, np.uint16)}
    for key, image in images.items():
        write_image(tmp_path / "in" / f"{key}.png", image)
    report = pack_folder(tmp_path / "in", tmp_path / "set.lmdb", workers=2, progress=False)
    assert report.records == 4
    reader = LmdbImageReader(tmp_path / "set.lmdb")
    assert reader.keys() == sorted(images)
    for key, image in images.items():
        back = reader.read(key)
        assert back.dtype == image.dtype
        np.testing.assert_array_equal(back, image)
    lines = (tmp_path / "set.lmdb" / "meta_info.txt").read_text().splitlines()
    assert lines == [f"{k}.png ({v.shape[0]},{v.shape[1]},{v.shape[2]}) 1" for k, v in sorted(images.items())]
    assert read_meta_info(tmp_path / "set.lmdb")["grey"].shape == (33, 21, 1)
    assert sorted(p.name for p in (tmp_path / "set.lmdb").iterdir()) == ["data.mdb", "lock.mdb", "meta_info.txt"]


def test_lmdb_strips_the_lr_suffix_when_given_the_scale(tmp_path):
    write_image(tmp_path / "in" / "0001x4.png", textured(8, 8))
    pack_folder(tmp_path / "in", tmp_path / "lr.lmdb", scale=4, workers=1, progress=False)
    assert LmdbImageReader(tmp_path / "lr.lmdb").keys() == ["0001"]


def test_lmdb_writer_grows_the_map_and_commits_in_batches(tmp_path):
    noise = [textured(64, 64, 3, seed) for seed in range(40)]  # ~12 KiB of incompressible PNG each
    with LmdbWriter(tmp_path / "grow.lmdb", batch_records=7, initial_map_size=64 << 10) as writer:
        for i, image in enumerate(noise):
            writer.put_image(f"k{i:02d}", image)
    assert writer.map_size > 64 << 10
    reader = LmdbImageReader(tmp_path / "grow.lmdb")
    assert len(reader.keys()) == 40
    np.testing.assert_array_equal(reader.read("k39"), noise[39])


def test_lmdb_refuses_to_overwrite_without_the_flag(tmp_path):
    write_image(tmp_path / "a" / "one.png", textured(8, 8))
    write_image(tmp_path / "b" / "two.png", textured(8, 8))
    pack_folder(tmp_path / "a", tmp_path / "x.lmdb", workers=1, progress=False)
    with pytest.raises(DataError, match=r"x.lmdb already exists; pass --overwrite"):
        pack_folder(tmp_path / "b", tmp_path / "x.lmdb", workers=1, progress=False)
    assert LmdbImageReader(tmp_path / "x.lmdb").keys() == ["one"]
    pack_folder(tmp_path / "b", tmp_path / "x.lmdb", overwrite=True, workers=1, progress=False)
    assert LmdbImageReader(tmp_path / "x.lmdb").keys() == ["two"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "x.lmdb"]  # nothing left beside it


@pytest.mark.parametrize("names,message", [
    (["a.png", "a.bmp"], r"a\.(png|bmp) and .*a\.(png|bmp) both give the key 'a'"),
    (["img.v2.png"], r"cannot use 'img.v2' as an LMDB key"),
    (["caf\u00e9.png"], r"cannot use 'caf\u00e9' as an LMDB key"),
    (["two words.png"], r"cannot use 'two words' as an LMDB key"),
])
def test_lmdb_refuses_names_it_cannot_key(tmp_path, names, message):
    for name in names:
        write_image(tmp_path / "in" / name, textured(8, 8))
    with pytest.raises(DataError, match=message):
        pack_folder(tmp_path / "in", tmp_path / "bad.lmdb", workers=1, progress=False)
    assert not (tmp_path / "bad.lmdb").exists()


def test_an_interrupted_build_leaves_no_lmdb_under_the_final_name(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with LmdbWriter(tmp_path / "cut.lmdb", batch_records=2) as writer:
            for i in range(5):
                writer.put_image(f"k{i}", textured(8, 8, seed=i))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_killed_build_leaves_no_lmdb_under_the_final_name(tmp_path):
    script = (
        "import sys, time\n"
        "import numpy as np\n"
        "from mlkasr.data.lmdb_store import LmdbWriter\n"
        "with LmdbWriter(sys.argv[1], batch_records=1) as w:\n"
        "    for i in range(10000):\n"
        "        w.put_image(f'k{i}', np.zeros((8, 8, 3), np.uint8)); time.sleep(0.01)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed.lmdb")])
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob("killed.lmdb.partial-*/data.mdb")):
            assert process.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
        time.sleep(0.3)  # some batches committed
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (tmp_path / "killed.lmdb").exists()
    assert [p.name for p in tmp_path.iterdir()] == [f"killed.lmdb.partial-{process.pid}"]  # visibly unfinished


# -- check ---------------------------------------------------------------------------------------------------------
def _pair(tmp_path: Path, lr_shapes: dict[str, tuple[int, int]] | None = None) -> tuple[Path, Path]:
    for i, key in enumerate(["a", "b", "c"]):
        hr = textured(32, 24, seed=i)
        write_image(tmp_path / "hr" / f"{key}.png", hr)
        lr = make_lr(hr, 4) if not lr_shapes or key not in lr_shapes else textured(*lr_shapes[key], seed=9)
        write_image(tmp_path / "lr" / f"{key}x4.png", lr)
    pack_folder(tmp_path / "hr", tmp_path / "hr.lmdb", workers=1, progress=False)
    pack_folder(tmp_path / "lr", tmp_path / "lr.lmdb", scale=4, workers=1, progress=False)
    return tmp_path / "hr.lmdb", tmp_path / "lr.lmdb"


def test_check_passes_a_good_pair(tmp_path):
    hr, lr = _pair(tmp_path)
    report = check_lmdb(hr, lr, 4, progress=False)
    assert report.ok and report.records == 3
    assert report.lines()[-1] == "OK: every record decodes, meta_info.txt agrees, pairs match"


def test_check_reports_problems_by_key(tmp_path):
    hr, lr = _pair(tmp_path, lr_shapes={"b": (7, 6)})
    env = lmdb.open(str(hr))
    with env.begin(write=True) as txn:
        txn.put(b"c", b"not a png")  # undecodable
        txn.put(b"z", txn.get(b"a"))  # a record meta_info.txt does not list, and LR lacks
    env.close()
    report = check_lmdb(hr, lr, 4, progress=False)
    assert not report.ok and report.problem_count == 4
    assert sorted(str(p) for p in report.problems) == [
        "hr.lmdb key 'c': not a decodable image (9 bytes)",
        "hr.lmdb key 'z': no record with this key in lr.lmdb",
        "hr.lmdb key 'z': record not listed in meta_info.txt",
        "lr.lmdb key 'b': LR is 6x7 (WxH), expected 6x8 (HR 24x32 / 4)",
    ]
    assert "hr.lmdb key 'c'" in "\n".join(report.lines())


def test_check_reports_a_meta_info_that_disagrees(tmp_path):
    hr, _ = _pair(tmp_path)
    meta = hr / "meta_info.txt"
    meta.write_text(meta.read_text().replace("a.png (32,24,3) 1", "a.png (30,24,3) 1"))
    report = check_lmdb(hr, progress=False)
    assert [str(p) for p in report.problems] == ["hr.lmdb key 'a': meta_info.txt says (30, 24, 3), the record is (32, 24, 3)"]


# -- the recipe and the CLI ----------------------------------------------------------------------------------------
def test_div2k_recipe_uses_official_lr_when_present_and_generates_the_rest(tmp_path):
    hr = tmp_path / "DIV2K_train_HR"
    for i in range(3):
        write_image(hr / f"{i + 1:04d}.png", textured(120, 96, seed=i))
    official = tmp_path / "DIV2K_train_LR_bicubic" / "X2"
    for path in list_images(hr):
        write_image(official / f"{path.stem}x2.png", make_lr(read_image(path), 2))
    log: list[str] = []
    report = prepare_div2k(hr, tmp_path / "out", [2, 4], size=48, step=24, workers=1, progress=False, log=log.append)
    assert report.ok, log
    assert report.lr_sources[2] == f"official: {official}"
    assert report.lr_sources[4].startswith("generated: ")
    out = report.outputs
    assert out.hr_lmdb.name == "DIV2K_train_HR_sub.lmdb" and out.lr_lmdb[4].name == "DIV2K_train_LR_bicubic_X4_sub.lmdb"
    assert report.subimages == 3 * 4 * 3  # 120 -> 4 windows, 96 -> 3 windows at 48/24
    keys = LmdbImageReader(out.hr_lmdb).keys()
    assert keys[0] == "0001_s001" and keys == LmdbImageReader(out.lr_lmdb[2]).keys()
    # A second run refuses to overwrite; --reuse completes without redoing anything.
    with pytest.raises(DataError, match="already exists"):
        prepare_div2k(hr, tmp_path / "out", [2, 4], size=48, step=24, workers=1, progress=False)
    shutil.rmtree(out.lr_lmdb[4])
    report = prepare_div2k(hr, tmp_path / "out", [2, 4], size=48, step=24, reuse=True, workers=1, progress=False,
                           log=log.append)
    assert report.ok and out.lr_lmdb[4].exists() and f"lmdb: reusing {out.hr_lmdb}" in log
    # Other scales (another lcm grid) or another step cannot reuse those sub-images: pairs would be misaligned.
    for scales, step in (([2, 3, 4], 24), ([2, 4], 48)):
        with pytest.raises(DataError, match="would mix two sub-image grids"):
            prepare_div2k(hr, tmp_path / "out", scales, size=48, step=step, reuse=True, workers=1, progress=False)


def test_cli_prepare_div2k_and_check(tmp_path, capsys):
    hr = bsd_subset(tmp_path, 2)
    assert main(["prepare", "div2k", "--hr", str(hr), "--output", str(tmp_path / "out"), "--scales", "4",
                 "--size", "240", "--step", "120", "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "check x4: OK" in out and "training data ready:" in out
    hr_lmdb, lr_lmdb = tmp_path / "out" / "HR_sub.lmdb", tmp_path / "out" / "LR_bicubic_X4_sub.lmdb"
    assert main(["prepare", "check", str(hr_lmdb), "--pair", str(lr_lmdb), "--scale", "4", "--quiet"]) == 0
    assert "OK: every record decodes" in capsys.readouterr().out
    lines = (hr_lmdb / "meta_info.txt").read_text().splitlines()
    assert len(lines) == 12 and all(re.fullmatch(r"\d+_s\d{3}\.png \(240,240,3\) 1", line) for line in lines)
    assert main(["prepare", "lmdb", "--input", str(hr), "--output", str(hr_lmdb), "--quiet"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["prepare", "check", str(tmp_path / "nothing.lmdb"), "--quiet"]) == 2


def test_cli_prepare_lr_subimages_lmdb_steps(tmp_path, capsys):
    hr = bsd_subset(tmp_path, 2)
    assert main(["prepare", "lr", "--input", str(hr), "--output", str(tmp_path / "LR"), "--scale", "2", "3",
                 "--workers", "2", "--quiet"]) == 0
    assert len(list_images(tmp_path / "LR" / "X3")) == 2
    assert main(["prepare", "subimages", "--input", str(hr), "--output", str(tmp_path / "hs"), "--size", "240",
                 "--step", "120", "--scale", "3", "--lr-input", str(tmp_path / "LR" / "X3"), "--lr-output",
                 str(tmp_path / "ls"), "--quiet"]) == 0
    assert main(["prepare", "lmdb", "--input", str(tmp_path / "ls"), "--output", str(tmp_path / "ls.lmdb"),
                 "--quiet"]) == 0
    assert main(["prepare", "lmdb", "--input", str(tmp_path / "hs"), "--output", str(tmp_path / "hs.lmdb"),
                 "--quiet"]) == 0
    assert main(["prepare", "check", str(tmp_path / "hs.lmdb"), "--pair", str(tmp_path / "ls.lmdb"), "--scale", "3",
                 "--quiet"]) == 0
    assert main(["prepare", "check", str(tmp_path / "hs.lmdb"), "--pair", str(tmp_path / "ls.lmdb"), "--scale", "2",
                 "--quiet"]) == 1
    assert "expected" in capsys.readouterr().out


def test_ctrl_c_during_a_parallel_build_exits_cleanly_and_leaves_nothing(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C does): workers ignore it, the parent cancels and cleans up."""
    images = tmp_path / "in"
    images.mkdir()
    for copy in range(3):  # 600 images: seconds of work even on a fast machine
        for path in list_images(shared_path("train", "BSD200")):
            os.symlink(path, images / f"c{copy}_{path.name}")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlkasr", "prepare", "lmdb", "--input", str(images), "--output",
         str(tmp_path / "out.lmdb"), "--workers", "2", "--quiet"],
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob("out.lmdb.partial-*/data.mdb")):
        assert process.poll() is None and time.monotonic() < deadline, "the build did not start"
        time.sleep(0.02)
    time.sleep(0.5)  # past the workers' fork: a SIGINT landing inside CPython's at-fork hooks is dropped
    assert process.poll() is None, "the build finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the interrupted build hung instead of exiting")
    assert process.returncode == 130, output.decode()
    assert "interrupted" in output.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_lmdb_png_level_is_recorded_and_level_0_round_trips(tmp_path):
    image = textured(48, 40, seed=5) // 4  # some redundancy, so level 1 really compresses
    write_image(tmp_path / "in" / "a.png", image)
    level1 = pack_folder(tmp_path / "in", tmp_path / "l1.lmdb", workers=1, progress=False)
    assert main(["prepare", "lmdb", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "l0.lmdb"),
                 "--png-compression", "0", "--quiet"]) == 0
    assert (tmp_path / "l0.lmdb" / "meta_info.txt").read_text() == "a.png (48,40,3) 0\n"
    np.testing.assert_array_equal(LmdbImageReader(tmp_path / "l0.lmdb").read("a"), image)
    assert len(LmdbImageReader(tmp_path / "l0.lmdb").read_bytes("a")) > level1.bytes
    assert check_lmdb(tmp_path / "l0.lmdb", progress=False).ok


def test_an_lmdb_whose_target_appears_meanwhile_leaves_no_partial(tmp_path):
    from mlkasr.data import LmdbWriter

    target = tmp_path / "x.lmdb"
    with pytest.raises(DataError, match="already exists"):
        with LmdbWriter(target) as writer:
            writer.put_image("a", np.zeros((4, 4, 3), np.uint8))
            target.mkdir()  # another process published first: publishing must refuse, not merge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmdb"]


# -- killed runs, and outputs that would destroy inputs --------------------------------------------------------------


def _prepare_lr_at_work(tmp_path: Path) -> tuple[subprocess.Popen, list[str], list[int]]:
    """A ``prepare lr`` subprocess (argv, workers) once its 2 workers are at work on a partial X2 folder."""
    hr = tmp_path / "hr"
    ramp = (np.add.outer(np.arange(600), np.arange(600)) % 256).astype(np.uint8)
    for i in range(6):  # MATLAB-bicubic x2 + x3 of 600x600: about a second of work for 2 workers
        write_image(hr / f"{i:02d}.png", np.dstack([ramp, ramp.T, np.roll(ramp, i, 0)]))
    argv = ["prepare", "lr", "--input", str(hr), "--output", str(tmp_path / "lr"), "--scale", "2", "3", "--workers",
            "2", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "mlkasr", *argv], env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (list((tmp_path / "lr").glob("X2.partial-*")) and len(child_pids(process.pid)) >= 2):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
    except BaseException:
        process.kill()
        raise
    return process, argv, child_pids(process.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_prepare_takes_its_workers_down_and_a_rerun_cleans_up(tmp_path, capsys):
    process, argv, workers = _prepare_lr_at_work(tmp_path)
    process.kill()
    process.communicate()
    deadline = time.monotonic() + 10
    while any(process_running(pid) for pid in workers):  # they used to run on with parent 1
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.05)
    partials = sorted(p.name for p in (tmp_path / "lr").iterdir())
    assert partials == [f"X2.partial-{process.pid}", f"X3.partial-{process.pid}"]
    live = tmp_path / "lr" / f"X2.partial-{os.getppid()}"  # another build in progress (a live pid): left alone
    live.mkdir()
    assert main(argv) == 0  # the rerun, in this process
    err = capsys.readouterr().err
    assert f"warning: removed {tmp_path / 'lr' / partials[0]}: an unfinished output of process {process.pid}" in err
    assert f"warning: removed {tmp_path / 'lr' / partials[1]}" in err
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == sorted(["X2", "X3", live.name])
    assert len(list_images(tmp_path / "lr" / "X3")) == 6


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_of_prepare_unwinds_like_ctrl_c(tmp_path):
    """Its partial outputs are removed and its workers stopped, instead of both being left (as by kill -9)."""
    process, _, workers = _prepare_lr_at_work(tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip().endswith("mlkasr prepare: interrupted by SIGTERM"), err
    assert "Traceback" not in err
    assert list((tmp_path / "lr").iterdir()) == []  # no partial output left for a rerun to clean
    deadline = time.monotonic() + 2
    while any(process_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.02)


def test_dead_partials_are_removed_by_lmdb_builds_and_div2k_reuse(tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", textured(8, 8))
    dead = tmp_path / f"out.lmdb.partial-{dead_pid()}"
    live = tmp_path / f"out.lmdb.partial-{os.getppid()}"
    for partial in (dead, live):
        partial.mkdir()
        (partial / "data.mdb").write_bytes(b"half")
    with pytest.warns(UserWarning, match=f"removed {re.escape(str(dead))}: an unfinished output of process"):
        pack_folder(folder, tmp_path / "out.lmdb", workers=1, progress=False)
    assert not dead.exists() and live.is_dir() and (tmp_path / "out.lmdb" / "data.mdb").is_file()
    # --reuse skips steps whose output exists: their leftovers must go too
    hr = tmp_path / "DIV2K_train_HR"
    for i in range(2):
        write_image(hr / f"{i:04d}.png", textured(48, 48, seed=i))
    prepare_div2k(hr, tmp_path / "prepared", [2], size=24, step=24, workers=1, progress=False)
    stale = tmp_path / "prepared" / f"DIV2K_train_HR_sub.lmdb.partial-{dead_pid()}"
    stale.mkdir()
    with pytest.warns(UserWarning, match="DIV2K_train_HR_sub.lmdb.partial-"):
        report = prepare_div2k(hr, tmp_path / "prepared", [2], size=24, step=24, reuse=True, workers=1, progress=False)
    assert report.ok and not stale.exists()


def test_prepare_outputs_are_checked_before_any_work(tmp_path, capsys):
    folder = tmp_path / "in"
    write_image(folder / "a.png", textured(48, 48))
    (tmp_path / "file").write_text("x")
    for argv in (
        ["lmdb", "--input", str(folder), "--output", str(tmp_path / "file" / "x.lmdb")],
        ["subimages", "--input", str(folder), "--output", str(tmp_path / "file" / "sub"), "--size", "24", "--step", "24"],
        ["lr", "--input", str(folder), "--output", str(tmp_path / "file"), "--scale", "2"],
        ["div2k", "--hr", str(folder), "--output", str(tmp_path / "file"), "--scales", "2"],
    ):
        assert main(["prepare", *argv, "--quiet", "--workers", "1"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / "file") in err and "not a folder" in err, err
    assert (tmp_path / "file").read_text() == "x"


def test_overwrite_never_replaces_the_input_itself(tmp_path, capsys):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", textured(48, 48))
    for target in (folder, tmp_path):
        argv = ["prepare", "subimages", "--input", str(folder), "--output", str(target), "--size", "24", "--step", "24"]
        assert main([*argv, "--overwrite", "--quiet", "--workers", "1"]) == 2
        assert "building it would replace the input" in capsys.readouterr().err
    hr = write_image(tmp_path / "hr" / "a.png", textured(48, 48))
    argv = ["prepare", "subimages", "--input", str(hr.parent), "--output", str(tmp_path / "s"), "--size", "24",
            "--step", "24", "--scale", "2", "--lr-input", str(folder), "--lr-output", str(folder), "--overwrite"]
    assert main([*argv, "--quiet", "--workers", "1"]) == 2
    assert "building it would replace the input" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["a.png"]


def test_a_build_killed_while_replacing_its_output_loses_nothing(tmp_path):
    from mlkasr.data.staging import remove_dead_partials

    pid = dead_pid()
    final = tmp_path / "x.lmdb"
    (tmp_path / f"x.lmdb.replaced-{pid}").mkdir()  # killed between the two renames of publish()
    (tmp_path / f"x.lmdb.replaced-{pid}" / "data.mdb").write_text("previous")
    with pytest.warns(UserWarning, match=f"restored {re.escape(str(final))} from x.lmdb.replaced-{pid}"):
        remove_dead_partials(final)
    assert (final / "data.mdb").read_text() == "previous"
    (tmp_path / f"x.lmdb.replaced-{pid}").mkdir()  # killed after the new output was in place
    with pytest.warns(UserWarning, match="removed .*the replaced output"):
        remove_dead_partials(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmdb"]


def test_a_rerun_for_fewer_scales_removes_the_partials_of_the_others(tmp_path, capsys):
    """A killed ``prepare lr --scale 2 3 4`` rerun with ``--scale 2``: the X3/X4 partials go too, not only X2's."""
    hr = tmp_path / "hr"
    write_image(hr / "a.png", textured(24, 24))
    pid = dead_pid()
    for scale in (2, 3, 4):
        (tmp_path / "lr" / f"X{scale}.partial-{pid}").mkdir(parents=True)
    live = tmp_path / "lr" / f"X4.partial-{os.getppid()}"  # a build in progress elsewhere: left alone
    live.mkdir()
    argv = ["prepare", "lr", "--input", str(hr), "--output", str(tmp_path / "lr"), "--scale", "2", "--workers", "1"]
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().err.count("warning: removed") == 3
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["X2", live.name]
