"""The tools' error wrapper: user errors -> one `error:` line and status 2 (printed by the main rank,
or by the rank that raised a rank-local error), a non-finite loss -> status 3."""
import pytest

from video_mcmae.cli import run_cli
from video_mcmae.errors import CheckpointError, ConfigError, DataListError, NonFiniteLossError


class RankLocalError(RuntimeError):
    pass


def _raise(error):
    def body():
        raise error
    return body


@pytest.mark.parametrize("error", [ConfigError("bad key"), CheckpointError("bad key"), DataListError("bad key"),
                                   FileNotFoundError("bad key")])
def test_user_errors_print_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert run_cli(_raise(error)) == 2
    assert capsys.readouterr().err == "error: bad key\n"


def test_a_non_finite_loss_exits_3(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert run_cli(_raise(NonFiniteLossError("loss is nan"))) == 3
    assert capsys.readouterr().err == "error: loss is nan\n"


def test_other_ranks_stay_quiet_unless_the_error_is_their_own(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert run_cli(_raise(ConfigError("same on every rank"))) == 2
    assert run_cli(_raise(NonFiniteLossError("nan"))) == 3
    assert capsys.readouterr().err == ""
    assert run_cli(_raise(RankLocalError("only here")), rank_errors=(RankLocalError,)) == 2
    assert capsys.readouterr().err == "error: only here\n"


def test_success_is_0_and_other_exceptions_propagate(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert run_cli(lambda: None) == 0
    with pytest.raises(RankLocalError):
        run_cli(_raise(RankLocalError("a bug")))


def test_a_bug_propagates_with_a_note_saying_so(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    for bug in (KeyError("state"), RuntimeError("shapes differ")):
        with pytest.raises(type(bug)) as raised:
            run_cli(_raise(bug))
        assert raised.value.__notes__ == ["this is a bug in video_mcmae; please report it with the traceback above"]
    assert capsys.readouterr().err == ""


def test_the_body_s_own_exit_status_is_kept(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert run_cli(lambda: 1) == 1  # e.g. reencode_videos: some videos failed
    assert run_cli(lambda: {"acc1": 50.0}) == 0
