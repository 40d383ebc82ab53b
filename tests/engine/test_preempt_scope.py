"""SIGTERM outside the training steps: between the stages of a two-stage recipe, after the last step, and while the
``norton`` program exits. The random-moment test in ``test_preempt.py`` covers the steps themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from norton_core import hookimpl
from norton_core.engine import checkpoint as ckpt
from norton_core.engine import train
from norton_core.engine.preempt import Preemption, until_exit
from norton_core.errors import Preempted
from tests.engine.fakes import build_recipe, recipe_dict

ROOT = Path(__file__).resolve().parents[2]


def test_nested_blocks_share_the_outermost_handler_and_flag():
    before = signal.getsignal(signal.SIGTERM)
    with Preemption() as outer:
        with Preemption() as inner:
            assert inner is outer
        # the inner block's end did not put the default back: a signal here is still only a flag
        os.kill(os.getpid(), signal.SIGTERM)
        assert outer.requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_handler_inherited_by_a_fork_or_replaced_since_is_not_shared():
    def other(signum, frame):  # type: ignore[no-untyped-def]
        pass

    with Preemption() as outer:
        pid = os.fork()
        if pid == 0:  # the child inherits the block's object and handler; its own block must catch its signals
            code = 1
            try:
                with Preemption() as child:
                    os.kill(os.getpid(), signal.SIGTERM)
                    code = 0 if child is not outer and child.requested else 1
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        signal.signal(signal.SIGTERM, other)  # code that took SIGTERM over without a Preemption block
        with Preemption() as inner:
            assert inner is not outer
            os.kill(os.getpid(), signal.SIGTERM)
            assert inner.requested and not outer.requested
        assert signal.getsignal(signal.SIGTERM) is other


def test_a_sigterm_the_run_did_not_act_on_is_said_and_the_disposition_comes_back_in_process():
    lines: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with until_exit(lines.append, process_ends=False):
        os.kill(os.getpid(), signal.SIGTERM)
    assert lines == ["norton: SIGTERM came after the last training step; the work was finished and written first "
                     "(nothing to resume)"]
    assert signal.getsignal(signal.SIGTERM) is before  # a test or notebook process keeps its own disposition


@pytest.mark.parametrize("process_ends, code", [(True, 0), (False, -signal.SIGTERM)])
def test_after_the_command_a_program_that_ends_ignores_sigterm(process_ends, code):
    script = textwrap.dedent(f"""
        import os, signal
        from norton_core.engine.preempt import until_exit
        with until_exit(print, process_ends={process_ends}):
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's signal while the finished program exits
        print("exited normally")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == code, done.stderr
    assert ("exited normally" in done.stdout) is process_ends


def test_the_norton_programs_leave_sigterm_ignored_after_their_command():
    # the console scripts mark the process as ending with its command; an in-process main() does not
    script = textwrap.dedent("""
        import signal, sys
        import norton_core.cli as cli
        from norton_core.engine.preempt import until_exit
        sys.argv = ["norton", "--version"]
        try:
            cli.program_main()
        except SystemExit:
            pass
        with until_exit(print):
            pass
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "True", done.stderr
    with until_exit(print):  # this (pytest) process never called the programs
        pass
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN


class _TermAtFirstStageEnd:
    """SIGTERM to this process when the first stage ends (its evaluation done): the moment between the stages."""

    @staticmethod
    @hookimpl
    def norton_run_end(run, metrics):  # type: ignore[no-untyped-def]
        if run.recipe["run"]["name"] == "first":
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_between_the_stages_stops_the_second_at_its_first_step(tmp_path, plugins):
    first = build_recipe(recipe_dict(tmp_path, run={"name": "first"}, train={"epochs": 1}), plugins)
    stage_file = tmp_path / "first.toml"
    stage_file.write_text(first.to_toml())
    second = build_recipe(recipe_dict(tmp_path, run={"name": "second", "pretrain_recipe": str(stage_file)},
                                      train={"epochs": 1}), plugins)
    plugins.register(_TermAtFirstStageEnd(), name="term-at-first-stage-end")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="stopped after step 1 "):
        train(second, plugins=plugins)
    first_steps = ckpt.read_latest(tmp_path / "runs" / "first" / "checkpoints")
    assert first_steps is not None and first_steps != "step-1"  # the first stage trained to its end
    assert ckpt.read_latest(tmp_path / "runs" / "second" / "checkpoints") == "step-1"
    assert signal.getsignal(signal.SIGTERM) is before
