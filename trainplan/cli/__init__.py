"""The ``trainplan`` command line.

Each verb lives in its own module and is imported only when it runs, so ``trainplan plan`` never
pays for torch or deepspeed. Bad input (:class:`trainplan.errors.UsageError` or a click usage
error) prints one line and exits 2; any other failure prints one line and exits 1. ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import click

from trainplan import __version__
from trainplan.errors import TrainplanError, UsageError

__all__ = ["main", "cli"]

# verb -> "module:attribute" of its click command; help text shown without importing it.
_VERBS: dict[str, tuple[str, str]] = {
    "plan": ("trainplan.cli.plan:plan", "Estimate memory, time and cost of a training run; recommend a layout."),
    "models": ("trainplan.cli.catalog:models", "List the built-in model presets."),
    "gpus": ("trainplan.cli.catalog:gpus", "List the GPU catalog."),
    "run": ("trainplan.cli.run:run", "Run one real training trial through the deepspeed launcher."),
    "search": ("trainplan.cli.search:search", "Optuna sweep over real DeepSpeed trials."),
    "trials": ("trainplan.cli.search:trials", "Export the trials of a study as CSV, Parquet or JSON."),
    "report": ("trainplan.cli.report:report", "Write one self-contained HTML report."),
    "scale": ("trainplan.cli.scale:scale", "Fit LR, batch and loss laws on a ladder study and plan the target run."),
    "calibrate": ("trainplan.cli.calibrate:calibrate", "Fit the planner's constants to measured trials on one device."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _VERBS:
            return None
        module, attr = _VERBS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in _VERBS.items()])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainplan")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan, tune and report transformer training runs."""
    ctx.obj = {"debug": debug}


def _say(text: str) -> None:
    """One line on stderr, with any storage password masked (trainplan.safe)."""
    from trainplan.safe import redact

    click.echo(" ".join(redact(str(text)).split()) if "\n" in str(text) else redact(str(text)), err=True)


def _flag(param: click.Parameter | None) -> str | None:
    if param is None:
        return None
    if isinstance(param, click.Option):
        return max(param.opts, key=len)  # --output rather than -o
    return (param.name or "").upper() or None


def _click_error(exc: click.UsageError) -> str:
    """Click's usage errors in trainplan's one shape, ``trainplan: error: <flag>: <message>``."""
    flag, message = None, exc.format_message()
    if isinstance(exc, click.NoSuchOption):
        flag = exc.option_name
        message = "no such option" + (f"; did you mean {', '.join(sorted(exc.possibilities))}?"
                                      if exc.possibilities else "")
    elif isinstance(exc, click.BadParameter):  # MissingParameter included
        flag = _flag(exc.param)
        if flag and isinstance(exc, click.MissingParameter):
            message = "missing; " + ("give a value" if exc.param_type != "argument" else "required")
        elif flag:
            message = exc.message
    elif isinstance(exc, click.BadOptionUsage):
        flag = exc.option_name
        message = exc.message
    if flag:
        return f"trainplan: error: {flag}: {message}"
    verb = f" {exc.ctx.info_name}" if exc.ctx and exc.ctx.info_name != "trainplan" else ""
    return f"trainplan{verb}: error: {message}"


def _file_error(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"input is not valid {exc.encoding} text (byte {exc.start}); give a UTF-8 file"
    name = exc.filename if exc.filename is not None else ""
    return f"{name}: {exc.strerror or exc}" if name else str(exc)


# Errors about a file the user named: bad input (exit 2), like a UsageError.
_INPUT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # With standalone_mode=False click returns (not raises) a command's Exit code.
        rc = cli.main(args=args, prog_name="trainplan", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # pragma: no cover - click >= 8.2
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return 2
    except click.UsageError as exc:
        if debug:
            raise
        _say(_click_error(exc))
        return 2
    except UsageError as exc:
        if debug:
            raise
        _say(f"trainplan: error: {exc}")
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("trainplan: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("trainplan: interrupted", err=True)
        return 130
    except (UnicodeDecodeError, *_INPUT_OS_ERRORS) as exc:  # the catch-all for unreadable input
        if debug:
            raise
        _say(f"trainplan: error: {_file_error(exc)}")
        return 2
    except (TrainplanError, OSError) as exc:
        if debug:
            raise
        _say(f"trainplan: error: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line; --debug shows where
        if debug:
            raise
        _say(f"trainplan: internal error: {type(exc).__name__}: {exc} (run `trainplan --debug ...` for the traceback)")
        return 1
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
