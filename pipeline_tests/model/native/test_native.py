"""The native training step and gather (pipeline/model/native): the torch path's results, the same
bits at any thread count, clear errors, and a build that is reused, published whole, or declined."""

import ctypes
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.model import inputs, native
from pipeline.model.batches import Pool
from pipeline.model.fused_trainer import FusedTrainer, bind_to_flat_buffers
from pipeline.model.network import ClickMLP, make_optimizer
from pipeline.settings import SettingsError, load_settings

SCRIPTS = Path(__file__).parents[2] / "scripts"


def _batches(steps: int, rows: int = 1024, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.randn(rows, 40, generator=g) * 2, (torch.rand(rows, generator=g) < 0.46).float()


def _trainer(use_native: bool, lr: float = 1e-3, batch_size: int = 1024) -> FusedTrainer:
    torch.manual_seed(5)
    model = ClickMLP()
    return FusedTrainer(bind_to_flat_buffers(model, make_optimizer(model, lr)), batch_size, use_native=use_native)


def test_the_tests_run_the_native_kernels():
    # conftest requires them (PIPELINE_NATIVE_KERNELS=required): the fast path is what every training test runs
    assert native.kernels() is not None and _trainer(True).kernel == "native"


def test_native_steps_follow_the_torch_path():
    fast, reference = _trainer(True), _trainer(False)
    assert fast.kernel == "native" and reference.kernel == "torch (use_native=False)"
    before = fast.flat.clone()
    for x, clicks in _batches(20):
        fast.step(x, clicks)
        reference.step(x, clicks)
    (fast_loss, fast_rows), (ref_loss, ref_rows) = fast.take_loss(), reference.take_loss()
    assert fast_rows == ref_rows == 20 * 1024 and abs(fast_loss - ref_loss) / ref_rows < 1e-6
    assert float(fast.step_count) == float(reference.step_count) == 20.0
    assert float((fast.flat - before).abs().max()) > 1e-3  # training moved the weights
    torch.testing.assert_close(fast.flat, reference.flat, rtol=1e-4, atol=2e-6)
    torch.testing.assert_close(fast.exp_avg_sq, reference.exp_avg_sq, rtol=1e-3, atol=1e-12)
    # the module and the optimizer see the kernel's updates (views of the same buffers)
    assert torch.equal(fast.model.fc2.weight.detach().flatten(), fast.flat[256 * 41:256 * 41 + 128 * 256])


def test_a_short_last_batch_and_a_larger_one_than_the_buffers():
    fast, reference = _trainer(True, batch_size=256), _trainer(False, batch_size=256)
    for rows in (256, 100, 700, 256):  # 700 > 256: the buffers grow, the kernel's pointers follow
        x, clicks = next(_batches(1, rows, seed=rows))
        fast.step(x, clicks)
        reference.step(x, clicks)
    torch.testing.assert_close(fast.flat, reference.flat, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_training_on_a_pool_gathers_and_steps_as_the_torch_path_does(shuffled):
    users, restaurants = _tables()
    g = torch.Generator().manual_seed(4)
    rows = (torch.randint(0, 5_000, (2_500,), generator=g, dtype=torch.int32),
            torch.randint(0, 300, (2_500,), generator=g, dtype=torch.int32),
            (torch.rand(2_500, generator=g) < 0.46).float())
    pool = Pool(*rows, torch.randperm(2_500, generator=g) if shuffled else None)
    fast, reference = _trainer(True, batch_size=1024), _trainer(False, batch_size=1024)
    for trainer in (fast, reference):  # batches of 1,024, 1,024 and 452 rows
        assert trainer.train_pairs(users, restaurants, pool, range(0, 2_500, 1024)) == 3
    (fast_loss, fast_rows), (ref_loss, ref_rows) = fast.take_loss(), reference.take_loss()
    assert fast_rows == ref_rows == 2_500 and abs(fast_loss - ref_loss) / ref_rows < 1e-6
    torch.testing.assert_close(fast.flat, reference.flat, rtol=1e-4, atol=2e-6)
    # the same batches one by one, copied out of the pool in its order, through step(): the same bits
    one_by_one = _trainer(True, batch_size=1024)
    for start in range(0, 2_500, 1024):
        user_rows, restaurant_rows, clicks = pool.batch(start, min(start + 1024, 2_500))
        one_by_one.step(inputs.gather(users, restaurants, user_rows, restaurant_rows,
                                      one_by_one.input_buffer(len(clicks))), clicks)
    assert torch.equal(one_by_one.flat, fast.flat) and torch.equal(one_by_one.exp_avg_sq, fast.exp_avg_sq)
    assert one_by_one.take_loss() == (fast_loss, fast_rows)
    if shuffled:  # the order was followed, not the pool's own: training in-order gives other weights
        in_order = _trainer(True, batch_size=1024)
        in_order.train_pairs(users, restaurants, Pool(*rows), range(0, 2_500, 1024))
        assert not torch.equal(in_order.flat, fast.flat)


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_a_pool_row_outside_the_tables_stops_training_at_its_batch(shuffled):
    users, restaurants = _tables()
    user_rows = torch.zeros(2_048, dtype=torch.int32)
    user_rows[1_500] = 7_000
    order = torch.arange(2_048) if shuffled else None  # the identity, through the order
    trainer = _trainer(True, batch_size=1024)
    with pytest.raises(IndexError, match=r"user row 7000 \(pair 476 of 1024\) is outside the 5000-row user table"):
        trainer.train_pairs(users, restaurants, Pool(user_rows, torch.zeros(2_048, dtype=torch.int32),
                                                     torch.ones(2_048), order), range(0, 2_048, 1024))
    assert float(trainer.step_count) == 1.0  # the first batch trained, the second not


def test_native_steps_give_the_same_bits_on_one_and_two_threads():
    """The ThreadTuner switches counts mid-run and a resumed run may choose differently."""
    results, threads_before = [], torch.get_num_threads()
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        trainer = _trainer(True, lr=1e-8)
        for x, clicks in _batches(8):
            trainer.step(x, clicks)
        results.append((trainer.flat.clone(), trainer.exp_avg.clone(), trainer.exp_avg_sq.clone()))
    torch.set_num_threads(threads_before)
    assert all(torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other, strict=True))


def _thread_bits(tmp_path, command: list[str], **env) -> dict:
    """Run ``command`` in a fresh process started without MKL_CBWR (unless given in ``env``); at
    its exit the process trains the native step on 1, 2 and 1 threads (scripts/thread_bits.py,
    loaded as its sitecustomize) and reports what it saw."""
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copyfile(SCRIPTS / "thread_bits.py", hook / "sitecustomize.py")
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | env
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    environment["THREAD_BITS_REPORT"] = str(tmp_path / "report.json")
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "report.json").exists(), done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((tmp_path / "report.json").read_text())


ENTRY_POINTS = {"pipeline command": [str(Path(sys.executable).with_name("pipeline")), "--help"],
                "code location": [sys.executable, "-c", "import pipeline.definitions"]}


def test_a_fresh_pipeline_command_runs_in_mkl_strict_reproducibility(tmp_path):
    """Started without MKL_CBWR, the command sets it before any product: its native steps give the
    same bits on 1 and 2 threads, and the check finds nothing to warn about."""
    seen = _thread_bits(tmp_path, ENTRY_POINTS["pipeline command"])
    assert seen["MKL_CBWR"] == "AUTO,STRICT" and seen["kernel"] == "native"
    assert seen["same_bits"] and seen["check"] and seen["warnings"] == []


def test_native_steps_started_through_the_code_location_give_the_same_bits_on_one_and_two_threads(tmp_path):
    """What every Dagster process imports first, in a process started without MKL_CBWR."""
    seen = _thread_bits(tmp_path, ENTRY_POINTS["code location"])
    assert seen["MKL_CBWR"] == "AUTO,STRICT" and seen["kernel"] == "native"
    assert seen["same_bits"] and seen["check"] and seen["warnings"] == []


LATE = ("import torch; torch.mm(torch.ones(4, 4), torch.ones(4, 4)); "
        "from pipeline.model.reproducible import enable_reproducible_blas; enable_reproducible_blas()")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["turned off", "set after the first product"])
def test_the_check_says_whether_thread_counts_change_the_bits_and_warns_when_they_do(tmp_path, how):
    """MKL_CBWR=OFF is kept (an operator's value wins); set after MKL's first call it has no effect.
    Either way the check agrees with what training does, and warns when the bits differ."""
    if how == "turned off":
        seen = _thread_bits(tmp_path, ENTRY_POINTS["pipeline command"], MKL_CBWR="OFF")
        assert seen["MKL_CBWR"] == "OFF"
    else:
        seen = _thread_bits(tmp_path, [sys.executable, "-c", LATE])
        assert seen["MKL_CBWR"] == "AUTO,STRICT"
    assert seen["kernel"] == "native" and seen["check"] == seen["same_bits"]
    if seen["same_bits"]:  # a machine whose MKL does not split these products between threads
        assert seen["warnings"] == []
    else:
        assert len(seen["warnings"]) == 1 and "different bits on 1 and 2 threads" in seen["warnings"][0]
        assert f"(MKL_CBWR={seen['MKL_CBWR']})" in seen["warnings"][0]


def _tables(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5_000, 30, generator=g), torch.randn(300, 10, generator=g)


def test_native_gather_equals_index_select_into_a_wider_buffer():
    users, restaurants = _tables()
    g = torch.Generator().manual_seed(1)
    user_rows = torch.randint(0, 5_000, (777,), generator=g, dtype=torch.int32)
    restaurant_rows = torch.randint(0, 300, (777,), generator=g, dtype=torch.int32)
    buffer = torch.ones(777, 41)
    assert native.kernels().gather(users, restaurants, user_rows, restaurant_rows, buffer[:, :40])
    assert torch.equal(buffer[:, :30], users[user_rows.long()])
    assert torch.equal(buffer[:, 30:40], restaurants[restaurant_rows.long()])
    assert torch.equal(buffer[:, 40], torch.ones(777))  # the ones column is left alone


def test_gather_names_an_out_of_range_row_and_other_dtypes_take_index_select():
    users, restaurants = _tables()
    rows = torch.tensor([0, 4_999, 5_000, 1], dtype=torch.int32)
    with pytest.raises(IndexError, match=r"user row 5000 \(pair 2 of 4\) is outside the 5000-row user table"):
        inputs.gather(users, restaurants, rows, torch.zeros(4, dtype=torch.int32), torch.empty(4, 40))
    with pytest.raises(IndexError, match=r"restaurant row -1 \(pair 0 of 1\) is outside the 300-row"):
        inputs.gather(users, restaurants, torch.zeros(1, dtype=torch.int32), torch.tensor([-1], dtype=torch.int32),
                      torch.empty(1, 40))
    long_rows = torch.tensor([3, 2])
    assert not native.kernels().gather(users, restaurants, long_rows, long_rows, torch.empty(2, 40))
    out = inputs.gather(users, restaurants, long_rows, long_rows, torch.empty(2, 40))
    assert torch.equal(out, torch.cat([users[long_rows], restaurants[long_rows]], 1))


class _ReorderedTrainer(ctypes.Structure):  # beta1 moved to the end
    _fields_ = [field for field in native.Trainer._fields_ if field[0] != "beta1"] + [("beta1", ctypes.c_double)]


class _IntegerRateTrainer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if name == "lr" else kind) for name, kind in native.Trainer._fields_]


class _LongerTrainer(ctypes.Structure):
    _fields_ = [*native.Trainer._fields_, ("extra", ctypes.c_int64)]


def test_the_python_mirror_of_the_c_structure_is_checked_against_the_built_library():
    kernels = native.kernels()
    assert kernels.layout_mismatch() is None  # every build is checked so before it is published
    assert kernels.layout_mismatch(_ReorderedTrainer) == (
        "field 14: ('beta1', b'd', 112) in C, ('beta2', b'd', 112) in Python (size 184 bytes in C, 184 in Python)")
    assert kernels.layout_mismatch(_IntegerRateTrainer) == (
        "field 13: ('lr', b'd', 104) in C, ('lr', b'i', 104) in Python (size 184 bytes in C, 184 in Python)")
    assert kernels.layout_mismatch(_LongerTrainer) == (
        "23 fields in C, 24 in Python (size 184 bytes in C, 192 in Python)")


def test_a_failing_matrix_product_raises_with_atens_message():
    trainer = _trainer(True)
    clicks = torch.zeros(4)
    status = trainer.kernels.library.train_step(ctypes.byref(trainer._native_state()), clicks.data_ptr(), -1,
                                                trainer._logged_z.data_ptr(), trainer._logged_y.data_ptr())
    assert status == native.MATMUL_FAILED
    with pytest.raises(native.NativeMatmulFailed, match=r"at::mm_out\(-1×41, 41×128\): .*negative dimension -1"):
        trainer.kernels.check_step(status)


def test_the_build_is_reused_and_unused_builds_are_removed(tmp_path):
    unused, recent = tmp_path / "kernels-0123456789abcdef.so", tmp_path / "kernels-fedcba9876543210.so"
    killed = tmp_path / ".kernels-0123456789abcdef.so.tmp-0123456789ab"
    for path in (unused, recent, killed):
        path.write_bytes(b"another build")
    month_ago = time.time() - 31 * 86400
    os.utime(unused, (month_ago, month_ago))
    os.utime(killed, (month_ago, month_ago))
    path = native.build_into(tmp_path)
    built = path.stat().st_mtime_ns
    assert path.parent == tmp_path and not unused.exists() and not killed.exists()
    assert recent.exists()  # another checkout's torch, say, may be using it
    assert native.build_into(tmp_path) == path and path.stat().st_mtime_ns == built  # not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".sha256", recent.name])


@pytest.fixture
def fresh_kernels(tmp_path):
    """``fresh_kernels(kernels=..., compiler=...)``: native.kernels() decided again under those settings
    (as an entry point hands them over), building in a fresh directory; the session's settings afterwards."""
    session = native._settings[0]

    def configure(**values):
        native.configure(dataclasses.replace(session, cache_dir=str(tmp_path / "cache"), **values))

    configure()
    yield configure
    native.configure(session)


@pytest.mark.parametrize("missing, why", [
    ({"compiler": "no-such-cc"}, "no C compiler: 'no-such-cc' is not on PATH (install gcc, or set CC)"),
    ({"cxx_compiler": "no-such-c++"}, "no C++ compiler: 'no-such-c++' is not on PATH (install g++, or set CXX)")])
def test_without_a_compiler_training_takes_the_torch_path_and_says_why(missing, why, fresh_kernels):
    fresh_kernels(kernels="auto", **missing)
    assert native.kernels() is None
    assert _trainer(True).kernel == f"torch ({why})"
    users, restaurants = _tables()
    rows = torch.tensor([2, 1], dtype=torch.int32)
    assert torch.equal(inputs.gather(users, restaurants, rows, rows, torch.empty(2, 40)),
                       torch.cat([users[rows.long()], restaurants[rows.long()]], 1))


def test_a_failing_compiler_is_named_and_required_kernels_raise(fresh_kernels):
    fresh_kernels(kernels="required", compiler="false")  # runs, and fails
    with pytest.raises(native.NativeKernelsUnavailable, match=r"required, but the kernels are unavailable: .*false"):
        native.kernels()
    assert list(native.cache_dir().iterdir()) == []  # nothing half-built left


def test_off_takes_the_torch_path(fresh_kernels):
    fresh_kernels(kernels="off")
    assert _trainer(True).kernel == "torch (PIPELINE_NATIVE_KERNELS=off)"
    with pytest.raises(SettingsError, match="PIPELINE_NATIVE_KERNELS: expected one of auto, required, off, got 'fast'"):
        load_settings({"PIPELINE_NATIVE_KERNELS": "fast"})
    with pytest.raises(ValueError, match="PIPELINE_NATIVE_KERNELS must be one of"):
        fresh_kernels(kernels="fast")


@pytest.mark.parametrize("tamper", ["truncated", "appended to", "unrecorded"])
def test_a_cached_build_that_is_not_what_was_built_is_rebuilt_not_loaded(tamper, fresh_kernels):
    fresh_kernels(kernels="required")
    path = native.kernels().path
    built = path.read_bytes()
    record = path.with_name(path.name + ".sha256")
    replacement = path.with_name("replacement")  # replaced, not written in place: this process has it mapped
    if tamper == "truncated":
        replacement.write_bytes(built[:len(built) // 2])  # fails to load: the entry must not block the kernels
    elif tamper == "appended to":
        replacement.write_bytes(built + b"\x90" * 64)  # still loads, by name alone
    else:
        replacement.write_bytes(built)
        record.unlink(missing_ok=True)  # a file nobody recorded, under the build's name
    os.replace(replacement, path)
    native._loaded.cache_clear()
    kernels = native.kernels()
    assert kernels.path == path and path.read_bytes() == built  # rebuilt, then loaded
    assert record.read_text().split()[0] == hashlib.sha256(built).hexdigest()  # recorded with the build
    assert _trainer(True).kernel == "native"
