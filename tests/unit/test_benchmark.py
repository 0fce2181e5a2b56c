"""scripts/benchmark.py: the cheap parts only (the benchmark itself takes minutes and is run by hand).

Its `--help` must answer without importing torch, and a bad `--only` must fail at once, before any work; its checks,
its two renderings of a result table, its reading of `-X importtime` and its skipped sections are checked here too, and
the image-folder section's JPEG folder and tables (from stubbed measurements).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "benchmark.py"

# Runs the script's --help in a fresh interpreter, then reports whether torch got imported.
HELP_THEN_REPORT = f"""
import runpy, sys
sys.argv = ["benchmark.py", "--help"]
try:
    runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
except SystemExit:
    pass
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_help_lists_the_options_without_importing_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", HELP_THEN_REPORT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--only", "--append", "--json"):
        assert option in proc.stdout
    assert proc.stdout.strip().endswith("torch not imported")


def test_an_unknown_section_fails_before_any_benchmark() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "overhead,nonsense"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr and "importing torch" not in proc.stdout


# The script's own modules, imported as the script imports them (it puts scripts/ on sys.path); none imports torch.
sys.path.insert(0, str(SCRIPT.parent))
import bench_airbench  # noqa: E402
import bench_imagefolder  # noqa: E402
import bench_jpeg_folder  # noqa: E402
import bench_measure  # noqa: E402
import bench_sections  # noqa: E402
import benchmark  # noqa: E402


def test_a_check_passes_when_its_value_reaches_the_target() -> None:
    check = bench_measure.check
    assert check("ratio", 0.98, 0.97, at_least=True) == ("ratio", "0.98", "≥ 0.97", "PASS")
    assert check("ratio", 0.969, 0.97, at_least=True).status == "MISS"
    assert check("wall", 7.9, 8.0, at_least=False, unit=" s") == ("wall", "7.9 s", "≤ 8 s", "PASS")
    assert check("wall", 10.6, 8.0, at_least=False, unit=" s").status == "MISS"
    assert check("gpu", None, 0.97, at_least=True, missing="skipped") == ("gpu", "-", "≥ 0.97", "skipped")


def test_a_result_table_renders_as_markdown_and_as_a_rich_table() -> None:
    table = bench_measure.Table("summary", ["check", "result"], [["a | b", "PASS"], ["c", "MISS"]], ["a note"])
    assert benchmark.markdown(table).splitlines() == [
        "### summary", "", "| check | result |", "|---|---|", "| a \\| b | PASS |", "| c | MISS |", "", "- a note"]
    rich = benchmark.rich_table(table, styled=True)
    assert [column.header for column in rich.columns] == ["check", "result"]
    assert [row.style for row in rich.rows] == ["green", "red"]


def test_a_skipped_section_says_why_in_a_full_row() -> None:
    table = bench_measure.Table("5. GPU", ["torch.compile", "trainer", "hand", "ratio"])
    section = bench_measure.skipped("gpu", table, "no CUDA device", "GPU overhead", 0.97)
    assert section.tables[0].rows == [["-", "skipped: no CUDA device", "-", "-"]]
    assert [c.status for c in section.checks] == ["skipped"]


def test_importtime_output_gives_the_largest_root_packages() -> None:
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        300 |   hydra._internal",
        "import time:       200 |      5000 | hydra",
        "import time:        50 |      2000 | omegaconf",
        "import time:        10 |      9000 | trainer",
        "import time:         5 |         5 | site",
    ])
    imported = bench_measure.imports(stderr)
    assert imported[0] == ("hydra._internal", 300)
    assert bench_measure.largest_packages(imported, count=2) == [("hydra", 5.0), ("omegaconf", 2.0)]


def test_the_gpu_section_is_skipped_with_its_line_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the section would run")
    section = bench_sections.bench_gpu(bench_sections.QUICK, say=lambda message: None)
    assert [table.rows for table in section.tables] == [[["-", "skipped: no CUDA device", "-", "-"]],
                                                        [["-", "skipped: no CUDA device"]]]
    assert [(c.name, c.target, c.status) for c in section.checks] == [
        ("GPU overhead, ResNet-50 bf16, eager (trainer / hand)", "≥ 0.98", "skipped"),
        ("GPU overhead, ResNet-50 bf16, compile mode=default (trainer / hand)", "≥ 0.98", "skipped"),
        ("in-memory speed-up (CIFAR-10 epoch, GPU)", "≥ 1.5x", "skipped")]
    assert bench_sections.TARGET_OVERHEAD == 0.97  # the CPU overhead section keeps its own target


# ---- scripts/gpu_check.sh and the speed recipe against airbench94 (scripts/bench_airbench.py), without a GPU

GPU_CHECK = REPO / "scripts" / "gpu_check.sh"
NO_CUDA_LINE = ("gpu_check: needs a CUDA device (torch.cuda.is_available() is False): skipped the CUDA tests, the GPU "
                "benchmark and the speed recipe")


def test_gpu_check_stops_at_its_no_cuda_line_with_status_0(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: gpu_check.sh would run its checks")
    env = {key: value for key, value in os.environ.items() if key not in ("DATA_DIR", "PYTHONPATH")}
    env |= {"PYTHON": sys.executable, "WHEELS_DIR": str(tmp_path / "no-wheels"), "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert f"skipped: installing wheels (no folder {tmp_path / 'no-wheels'})" in lines
    assert NO_CUDA_LINE in lines and "== 3/5 CUDA tests (pytest -m cuda)" not in lines  # nothing runs after it
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["skipped"] == {"wheels": f"no folder {tmp_path / 'no-wheels'}", "cuda": "no CUDA device",
                                 "tests": "no CUDA device", "benchmark": "no CUDA device", "recipe": "no CUDA device"}
    assert NO_CUDA_LINE in (tmp_path / "out" / "gpu_check.log").read_text()


AIRBENCH_TABLE = """\
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
|       0  |      0  |      1.2346  |     0.5000  |   0.6100  |               |              0.5000  |
|          |   eval  |      0.8000  |     0.9000  |   0.9300  |       0.9412  |              3.8312  |
"""
TRAIN_LOG = """\
[17:05:26,952][INFO] epoch   1/3  train loss 1.4 acc 0.4  val loss 1.2 acc 0.5  lr 0.1  2,000 samples/s  *best
[17:05:34,473][INFO] epoch   2/3  train loss 1.1 acc 0.6  val loss 1.0 acc 0.6  lr 0.05  10,000 samples/s
[17:05:46,802][INFO] epoch   3/3  train loss 0.9 acc 0.7  val loss 0.9 acc 0.7  lr 0.01  10,000 samples/s
"""


def test_the_airbench_comparison_reads_both_sides_figures() -> None:
    assert bench_airbench.parse_airbench_table(AIRBENCH_TABLE) == {"tta_val_acc": 0.9412, "total_time_seconds": 3.8312}
    assert bench_airbench.parse_airbench_table("no table") == {}
    rates = bench_airbench.epoch_rates(TRAIN_LOG)
    assert rates == [2000.0, 10000.0, 10000.0]
    # epochs of equal size: 5 + 1 + 1 time units, of which the first at the steady rate would be 1
    assert bench_airbench.steady_train_s(7.0, rates) == pytest.approx(3.0)
    assert bench_airbench.steady_train_s(7.0, rates[:1]) is None
    ours = {"train_steady_s": 3.0, "phase_s": {"train": 7.0, "test": 0.5}, "wall_s": 40.0, "test_acc": 0.85}
    theirs = {"own_time_s": 2.5, "wall_s": 20.0, "test_acc": 0.86}
    ratios = bench_airbench.figures(ours, theirs)
    assert ratios["time_ratio"] == pytest.approx(1.4) and ratios["time_ratio_with_compile"] == pytest.approx(3.0)
    assert ratios["wall_ratio"] == pytest.approx(2.0)
    table = bench_airbench.comparison_table(ours, {"skipped": "no airbench wheel in W"}, ratios, 10_000)
    assert table.rows[0][:4] == ["ours", "0.8500", "3.50", "7.50"]
    assert table.rows[1][:2] == ["airbench94", "no airbench wheel in W"]
    assert table.rows[2][:4] == ["ours / airbench94", "-", "1.40x", "3.00x"]


def test_the_cifar_batches_become_airbench_tensors_image_for_image(tmp_path) -> None:
    import numpy as np

    source = write_smooth_cifar(tmp_path / "cifar-10-batches-py", per_batch=4)
    data = bench_airbench.read_cifar(tmp_path / "cifar-10-batches-py")
    assert data["train_images"].shape == (20, 32, 32, 3) and data["train_images"].dtype == np.uint8
    assert np.array_equal(data["train_images"], np.stack(source))  # HWC, as torchvision's CIFAR10.data
    assert data["test_images"].shape == (4, 32, 32, 3) and data["classes"] == [f"c{i}" for i in range(10)]
    assert list(data["train_labels"][:4]) == [0, 1, 2, 3]


def test_the_airbench_comparison_says_why_it_skips_without_the_cifar_batches(tmp_path, capsys) -> None:
    out = tmp_path / "airbench.json"
    assert bench_airbench.main(["--data", str(tmp_path), "--json", str(out)]) == 0
    reason = f"no cifar-10-batches-py in {tmp_path}"
    assert capsys.readouterr().out.strip() == f"skipped: speed recipe and airbench reference ({reason})"
    assert json.loads(out.read_text())["skipped"] == reason


# ---- the image-folder section (scripts/bench_imagefolder.py): its JPEG folder, tables and checks, no runs



def write_smooth_cifar(folder, per_batch: int) -> list:
    """CIFAR-10's python-version files of smooth images (JPEG keeps them close): red grows along x, green along y,
    blue by image; labels 0..9 in turn. Returns the train images as N x 32 x 32 x 3."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    ramp = np.linspace(0, 255, 32)
    images = []
    for index, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        hwc = [np.stack([np.broadcast_to(ramp, (32, 32)), np.broadcast_to(ramp[:, None], (32, 32)),
                         np.full((32, 32), 20 * k % 256)], axis=-1).astype(np.uint8) for k in range(per_batch)]
        rows = np.stack([image.transpose(2, 0, 1).reshape(-1) for image in hwc])  # CIFAR rows are channel-major
        labels = [(index * per_batch + k) % 10 for k in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": labels}, protocol=2))
        images += hwc if name != "test_batch" else []
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return images


def test_the_jpeg_folder_is_written_from_cifar_batches_once_and_reused(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    cifar, said = tmp_path / "cifar-10-batches-py", []
    source = write_smooth_cifar(cifar, per_batch=4)  # 20 train images, 2 a class; 4 test images
    folder, manifest = bench_jpeg_folder.jpeg_folder(cifar, {"train": 1, "test": None}, said.append, tmp_path / "out")
    assert manifest["images"] == {"train": 10, "test": 4} and manifest["quality"] == 95
    assert sorted(p.name for p in (folder / "train").iterdir()) == [f"c{i}" for i in range(10)]
    assert [len(list((folder / "train" / f"c{i}").glob("*.jpg"))) for i in range(10)] == [1] * 10
    assert len(list((folder / "test").glob("*/*.jpg"))) == 4 and not folder.with_name(folder.name + ".partial").exists()
    decoded = np.asarray(Image.open(folder / "train" / "c3" / "00003.jpg"), dtype=np.int64)
    assert decoded.shape == (32, 32, 3) and np.abs(decoded - source[3]).mean() < 3  # JPEG's error, not a layout's

    stamp = (folder / "complete.json").stat().st_mtime_ns
    again, _ = bench_jpeg_folder.jpeg_folder(cifar, {"train": 1, "test": None}, said.append, tmp_path / "out")
    assert again == folder and (folder / "complete.json").stat().st_mtime_ns == stamp and "reusing" in said[-1]


def fake_job(wall: float, run_wall: float) -> dict:
    phases = dict.fromkeys(bench_imagefolder.PHASES, 0.5)
    return {"wall_s": wall, "run_wall_s": run_wall, "phase_s": phases, "train_samples_per_s": 500.0, "val_acc": 0.4}


def test_the_image_folder_tables_and_checks_from_stubbed_measurements() -> None:
    trainer, hand = bench_imagefolder.TRAINER, bench_imagefolder.HAND
    results = {"pil": {trainer: [fake_job(10.0, 8.0), fake_job(12.0, 9.0)],
                       hand: [fake_job(11.0, 10.0), fake_job(10.8, 9.8)]}}  # hand / trainer: 1.1 and 0.9
    skips = {"torchvision": "no data.decoder key"}
    e2e, phases = bench_imagefolder.end_to_end_tables(results, skips, {"images": {"train": 1000, "test": 200}}, 2)
    assert e2e.rows[0] == ["pil", trainer, "11.0 (10.0-12.0)", "91", "500", "0.400", "1.000"]
    assert e2e.rows[1][:3] == ["pil", hand, "10.9 (10.8-11.0)"] and e2e.rows[1][-1] == "-"
    assert e2e.rows[2] == ["torchvision", "skipped", "-", "-", "-", "-", "-"]
    assert "decoder=torchvision skipped: no data.decoder key" in e2e.notes
    assert phases.rows[0][:4] == ["pil", trainer, "2.50", "0.50"] and phases.rows[1][2] == "1.00"

    rates = {"pil": {trainer: [1000.0], hand: [900.0]}, "torchvision": {trainer: [1400.0], hand: [1200.0]}}
    ops = {"0:ToImage": 10.0, "1:Resize": 200.0, "2:CenterCrop": 20.0, "3:Flip": 70.0}
    costs = dict.fromkeys(rates, {"decode_us": 100.0, "transform_us": 150.0, "transform": "FastTransform",
                                  "hand_transform_us": 300.0, "hand_ops_us": ops})
    plan = bench_imagefolder.QUICK_FOLDER
    loader = bench_imagefolder.loader_table(rates, costs, {}, plan)
    assert loader.rows[1] == ["torchvision", "1,400", "1,200", "1.40x", "100", "150", "300",
                              "Resize 200, Flip 70, CenterCrop 20"]
    validations = {"pil": {trainer: [1.0, 1.2, 1.1], hand: [1.0, 1.0, 1.1]}}  # hand / trainer: 1.0 / 1.1
    validation = bench_imagefolder.validation_table(validations, skips, 3)
    assert validation.rows == [["pil", "1.10 (1.00-1.20)", "1.00 (1.00-1.10)", "0.909"],
                               ["torchvision", "skipped", "-", "-"]]
    checks = bench_imagefolder.section_checks(results, rates, skips, validations)
    assert [(c.value, c.status) for c in checks] == [
        ("1", "PASS"), ("-", "skipped"),  # end to end
        ("0.5 s", "PASS"), ("-", "skipped"),  # phase_s.report
        ("0.909", "MISS"), ("-", "skipped"),  # the validation pass
        ("1.4x", "PASS")]


def test_the_image_folder_section_says_why_it_skips_without_the_cifar_batches(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench_imagefolder, "CIFAR_DIR", tmp_path / "cifar-10-batches-py")
    section = bench_imagefolder.bench_imagefolder(bench_sections.QUICK, say=lambda message: None)
    assert section.tables[0].rows == [["-", f"skipped: no CIFAR-10 batches in {tmp_path / 'cifar-10-batches-py'}"]]
    assert {c.status for c in section.checks} == {"skipped"}


def test_the_hand_loop_gets_the_trainers_images_model_and_optimizer_settings(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from bench_imagefolder_hand import Spec, build_loaders

    from trainer.build import build_data

    write_smooth_cifar(tmp_path / "cifar-10-batches-py", per_batch=10)  # every class in the test batch
    folder, _ = bench_jpeg_folder.jpeg_folder(tmp_path / "cifar-10-batches-py", {"train": None, "test": None},
                                              lambda message: None, tmp_path / "out")
    overrides = bench_imagefolder.trainer_overrides(folder, ())
    cfg = bench_measure.compose(*overrides, "data.num_workers=0")
    spec = Spec(**bench_imagefolder.hand_spec(cfg, "pil", tmp_path / "checkpoints"))
    assert (spec.batch_size, spec.resize, spec.padding, spec.flip, spec.lr) == (128, 37, 4, 0.5, cfg.optim.lr)
    trainer_data, (train, val) = build_data(cfg), build_loaders(spec)
    for ours, theirs in ((trainer_data.val_set, val.dataset), (trainer_data.train_set, train.dataset)):
        torch.manual_seed(0)  # the train transforms draw their crops and flips from torch's RNG
        expected = ours[3][0]
        torch.manual_seed(0)
        assert torch.equal(theirs[3][0], expected)
    assert (spec.model_target, spec.model_kwargs["depth"], spec.model_kwargs["num_classes"]) == (
        "trainer.models.resnet.ResNet", 18, 10)  # the class and arguments trainer.build.build_model instantiates


def test_the_validation_race_times_both_passes_over_the_trainers_val_loader(tmp_path) -> None:
    pytest.importorskip("torch")
    import bench_folder_passes

    from trainer.training.setup import build_run

    write_smooth_cifar(tmp_path / "cifar-10-batches-py", per_batch=10)  # every class in the test batch
    folder, _ = bench_jpeg_folder.jpeg_folder(tmp_path / "cifar-10-batches-py", {"train": None, "test": None},
                                              lambda message: None, tmp_path / "out")
    overrides = [*bench_imagefolder.trainer_overrides(folder, ()), "data.num_workers=0", "model=simple_cnn"]
    seconds = bench_folder_passes.timed_validations(build_run(bench_measure.compose(*overrides)), rounds=3)
    assert set(seconds) == {bench_imagefolder.TRAINER, bench_imagefolder.HAND}
    assert all(len(times) == 3 and all(t > 0 for t in times) for times in seconds.values())
