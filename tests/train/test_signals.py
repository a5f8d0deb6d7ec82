"""StopFlag: SIGINT/SIGTERM become a request to stop after the current step."""

import os
import signal

import pytest

from gsa.train.signals import StopFlag


def test_signal_sets_the_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopFlag()
    with stop.installed():
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_raises_keyboard_interrupt():
    stop = StopFlag()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
