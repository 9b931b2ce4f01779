"""SIGTERM during a command runs its cleanup (locks, branch switch-back) and exits 143."""

from __future__ import annotations

import argparse
import os
import signal

import pytest

import ctxopt.cli as cli


def test_sigterm_raises_in_main_thread_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(cli.Terminated):
        with cli.sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                cleaned.append(True)
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == before


def test_main_exits_143_with_a_resume_hint(monkeypatch, capsys):
    released = []

    def killed(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            released.append("lock")

    def parser():
        p = argparse.ArgumentParser(prog="ctxopt")
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(func=killed)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 143
    assert released == ["lock"]
    assert "terminated; rerun the same command to resume" in capsys.readouterr().err
