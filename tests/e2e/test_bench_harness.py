"""The benchmark harness's own logic (bench/run.py, bench/paired.py): the
statistics behind the targets table, what fails a run, and the checks on
its command line. `make bench` itself is not run here (minutes of load, not
a test); these are the parts whose mistakes would give a wrong verdict
without anyone noticing."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import run  # noqa: E402

pytestmark = pytest.mark.timeout(60)

UP, ONE, AGAIN = "upcase (C example)", "upcase (1 loop + defer-accept)", f"{run.REFERENCE} (again)"


def test_ratios_pair_the_same_cycle():
    # Cycle i of the server over cycle i of the base: 2x in every cycle,
    # although the values themselves spread widely.
    st = run.ratio_stats([2.0, 40.0, 6.0, 10.0], [1.0, 20.0, 3.0, 5.0])
    assert (st["ratio"], st["q1"], st["q3"]) == (2.0, 2.0, 2.0)
    # Unpaired (sorted separately), the same figures would not give 2x.
    st = run.ratio_stats([1.0, 1.0, 4.0], [2.0, 1.0, 1.0])
    assert st["ratio"] == 1.0 and st["q1"] == 0.75 and st["q3"] == 2.5


def test_paired_summary_keeps_cpu_and_rate_apart():
    per = {run.REFERENCE: {"cpu": [10.0, 10.0, 20.0], "rate": [100.0, 100.0, 50.0]},
           ONE: {"cpu": [8.0, 9.0, 16.0], "rate": [110.0, 100.0, 60.0]}}
    got = run.paired_summary(per)
    assert got[run.REFERENCE]["cpu"]["ratio"] == 1.0
    assert got[ONE]["cpu"]["ratio"] == pytest.approx(0.8)
    assert got[ONE]["rate"]["ratio"] == pytest.approx(1.1)
    assert got[ONE]["cpu"]["median"] == 9.0
    assert got[ONE]["cycles"] == 3


@pytest.mark.parametrize("names, cycles", [
    ([ONE, run.REFERENCE], 3),             # the reference not first
    ([run.REFERENCE, ONE, ONE], 3),        # a server twice
    ([run.REFERENCE], 3),                  # nothing to compare
    ([run.REFERENCE, ONE], 1),             # no quartiles from one cycle
])
def test_paired_refuses_a_bad_plan_before_starting_anything(names, cycles):
    with pytest.raises(ValueError):
        run.paired("udp", names, cycles, 0.5)


def row(server, mode, **kw):
    base = {"server": server, "mode": mode, "rate": 100.0, "unit": run.UNIT[mode], "ops": 100,
            "cpu_us_per_op": 10.0, "errors": 0, "bad_replies": 0, "lost": 0}
    if mode == "stream":
        base["verified"] = True
    base.update(kw)
    return base


def test_what_fails_a_run():
    assert run.round_problems(row(ONE, "udp"), 1) == []
    assert run.round_problems(row("tokio", "udp", bad_replies=2), 1) != []      # a wrong reply, from anyone
    assert run.round_problems(row("asyncio", "udp", lost=3), 1) == []           # their loss, in the table
    assert run.round_problems(row(ONE, "udp", lost=3), 1) != []                 # ours fails the run
    assert run.round_problems(row(run.REFERENCE, "oneshot", errors=1), 1) != []
    assert run.round_problems(row(ONE, "stream", verified=False), 2) != []      # a stream cut short
    assert run.round_problems(row("tokio", "oneshot", failure="no listening line", errors=1), 3) != []
    assert "round 2" in run.round_problems(row(ONE, "stream", verified=False), 2)[0]


def slice_summary(cpu, rate):
    """paired_summary() of servers whose every cycle is the given ratio to
    a reference at 10 µs and 100 ops/s."""
    per = {run.REFERENCE: {"cpu": [10.0] * 4, "rate": [100.0] * 4}}
    for name, c in cpu.items():
        per[name] = {"cpu": [10.0 * c] * 4, "rate": [100.0 * rate.get(name, 1.0)] * 4}
    return run.paired_summary(per)


def target_line(md, label):
    return next(line for line in md.splitlines() if line.startswith(f"| {label} |"))


def test_targets_take_the_slices_over_the_rounds():
    # Rounds say upcase used 1.5x the reference's CPU; the slices say 0.7x.
    rows = [row(run.REFERENCE, "udp"), row(UP, "udp", cpu_us_per_op=15.0), row(ONE, "udp", cpu_us_per_op=15.0)]
    md = run.targets(rows, None, {"udp": slice_summary({UP: 0.7, ONE: 0.5}, {})})
    line = target_line(md, "server CPU per op, udp")
    assert "0.70x" in line and "0.50x" in line and line.endswith("| yes |")
    # Without slices, the rounds decide.
    line = target_line(run.targets(rows, None, {}), "server CPU per op, udp")
    assert "1.50x" in line and line.endswith("| no |")


def test_the_python_target_is_paired_with_threading_in_the_slices():
    py, py1, thr = "upcase.Server (Python)", "upcase.Server (Python, 1 loop + defer-accept)", "ThreadingTCPServer"
    rows = [row(n, "oneshot") for n in [run.REFERENCE, UP, ONE, py, py1, thr]]
    sl = slice_summary({UP: 1.0, ONE: 1.0, py: 1.0, py1: 1.0, thr: 7.0}, {py: 1.0, py1: 0.9, thr: 0.2})
    line = target_line(run.targets(rows, None, {"oneshot": sl}), "upcase.Server vs ThreadingTCPServer, oneshot conn/s")
    assert "5.00x" in line and "4.50x" in line and line.endswith("| yes |")


def run_cli(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=30)


def test_run_py_refuses_unknown_servers_and_bad_counts_before_measuring():
    out = run_cli(str(ROOT / "bench" / "run.py"), "--only", "nosuch")
    assert out.returncode == 2 and "no server named 'nosuch'" in out.stderr
    out = run_cli(str(ROOT / "bench" / "run.py"), "--cycles", "1")
    assert out.returncode == 2 and "--cycles" in out.stderr


def test_run_py_refuses_unknown_modes_before_measuring():
    out = run_cli(str(ROOT / "bench" / "run.py"), "--modes", "oneshot,onshot")
    assert out.returncode == 2 and "--modes: onshot" in out.stderr
    out = run_cli(str(ROOT / "bench" / "run.py"), "--modes", ",")
    assert out.returncode == 2 and "none given" in out.stderr


def a_run(log, out, err, end):
    """A run that prints `out` and, on stderr, `err` through a Tee on
    `log`, then ends it with `end` (Tee.keep or Tee.discard)."""
    tee = run.Tee(log)
    print(out)
    print(err, file=sys.stderr)
    end(tee)
    assert not log.with_name(log.name + ".tmp").exists()


def test_the_log_replaces_the_last_only_with_the_results(tmp_path, capsys):
    log = tmp_path / "latest-run.log"
    log.write_text("the last run\n")
    a_run(log, "a run that stops half-way", "and its error", run.Tee.discard)
    assert log.read_text() == "the last run\n"
    a_run(log, "a run that wrote its results", "with a warning", run.Tee.keep)
    assert log.read_text() == "a run that wrote its results\nwith a warning\n"
    # Both went to the terminal too, and the streams are the terminal's again.
    out, err = capsys.readouterr()
    assert out.count("a run") == 2 and "with a warning" in err
    assert not isinstance(sys.stdout, run._Both) and not isinstance(sys.stderr, run._Both)


def test_paired_py_refuses_unknown_servers_and_modes():
    out = run_cli(str(ROOT / "bench" / "paired.py"), "udp", "nosuch")
    assert out.returncode == 2 and "no server named 'nosuch'" in out.stderr
    out = run_cli(str(ROOT / "bench" / "paired.py"), "persistent", "slide server (Python)")
    assert out.returncode == 2 and "does not run persistent" in out.stderr
    out = run_cli(str(ROOT / "bench" / "paired.py"), "hold", ONE)
    assert out.returncode == 2
    out = run_cli(str(ROOT / "bench" / "paired.py"), "udp", ONE, "--load='--threads 2")
    assert out.returncode == 2 and "--load: No closing quotation" in out.stderr


def test_paired_py_load_goes_after_the_modes_own():
    import paired
    assert paired.with_load("udp", "--threads 2 --src 'kernel'") == run.LOAD["udp"] + ["--threads", "2", "--src", "kernel"]
    assert paired.with_load("stream", "") == run.SLICE_LOAD["stream"]
    # The mode's own options come first, so the later ones win in the load generator.
    assert paired.with_load("oneshot", "--threads 1")[-2:] == ["--threads", "1"]
    assert "--threads" in run.LOAD["oneshot"]


def test_only_takes_names_that_hold_a_comma():
    py1 = "upcase.Server (Python, 1 loop + defer-accept)"
    assert run.only_names(f"{ONE},{py1},tokio") == ([ONE, py1, "tokio"], None)
    assert run.only_names("") == ([], None)
    assert run.only_names("tokio,nosuch") == (["tokio"], "nosuch")


def test_paired_py_extra_servers_are_name_equals_command():
    import paired
    taken = set(run.SERVERS)
    assert paired.extra_server("old=/tmp/old/tcp_server --quiet 0 {host}", taken) == (
        "old", ["/tmp/old/tcp_server", "--quiet", "0", run.HOST])
    # The name may hold spaces; the command is shell-split.
    assert paired.extra_server(" io uring = srv 'a b' ", taken) == ("io uring", ["srv", "a b"])
    for bad, why in [("noequals", "not NAME=COMMAND"), ("=srv 0", "not NAME=COMMAND"),
                     ("x=", "has no command"), (f"{run.REFERENCE}=srv", "is taken"), (f"{ONE}=srv", "is taken")]:
        with pytest.raises(ValueError, match=why):
            paired.extra_server(bad, taken)
    with pytest.raises(ValueError, match="No closing quotation"):
        paired.extra_server("x=srv 'a", taken)


def test_paired_py_checks_extra_servers_before_starting_anything():
    paired_py = str(ROOT / "bench" / "paired.py")
    out = run_cli(paired_py, "persistent", "--extra=x=/nonexistent/srv 0 {host}")
    assert out.returncode != 0 and "not found or not executable" in out.stderr and "/nonexistent/srv" in out.stderr
    out = run_cli(paired_py, "persistent", "--extra=x=srv", "--extra=x=srv2")
    assert out.returncode == 2 and "--extra: 'x' is taken" in out.stderr
    out = run_cli(paired_py, "persistent", "--extra=x")
    assert out.returncode == 2 and "not NAME=COMMAND" in out.stderr
    # Server names may come after the options.
    out = run_cli(paired_py, "persistent", "--cycles", "3", "nosuch")
    assert out.returncode == 2 and "no server named 'nosuch'" in out.stderr
    out = run_cli(paired_py, "persistent", "--extra=x=/nonexistent/srv", AGAIN)
    assert out.returncode != 0 and "/nonexistent/srv" in out.stderr
    # With no server named and none added, there is nothing to compare.
    out = run_cli(paired_py, "persistent")
    assert out.returncode == 2 and "at least one server" in out.stderr
