"""The one entry point, T5X-style: gin files plus command-line bindings.

  python -m rso_jax.main --gin_file=configs/checkpoint_roundtrip.gin --gin.WORK_DIR="'runs/x'"

With no --gin_file it runs DEFAULT_GIN_FILE. Gin files are looked up relative to the current
directory and to the repository root, so `gin/...` and `configs/...` resolve from anywhere.
The job to run is bound in gin as `main.run.job`. `--tiny` applies TINY_GIN_FILE after the
experiment's files: any experiment, shrunk to run on a CPU in about a minute.
`--builtin_task` (BUILTIN_TASK_GIN_FILE, before it) swaps the experiment's data for the
built-in synthetic task. `--help` lists every setting of the experiment (of its --gin_file, or
the default) with its value, and those left REQUIRED that a run needs.

Before anything runs, a macro that a gin file or binding sets and nothing reads (a misspelt
setting, `BEAT = 0.1`) is refused naming the closest known one, and so are settings left
`%gin.REQUIRED` that the run reads (data files, checkpoints, WORK_DIR), each named.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import rso_jax
from rso_jax import gin_macros
from rso_jax.runtime import cpu_tuning

REPO_ROOT = rso_jax.REPO_ROOT
DEFAULT_GIN_FILE = "configs/demo_rso.gin"
TINY_GIN_FILE = "gin/tiny.gin"
BUILTIN_TASK_GIN_FILE = "gin/builtin_task.gin"
RUN_FILE = "gin/runs/rso.gin"  # its header says what each setting means


class GinConfigError(ValueError):
    """A gin file or binding could not be parsed or does not match the code."""


def parse_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits argv into gin files and bindings (`--gin.NAME=VALUE` -> 'NAME = VALUE')."""
    parser = _argument_parser()
    args, rest = parser.parse_known_args(list(argv))
    gin_files = experiment_gin_files(args.gin_file, args.builtin_task, args.tiny)
    if args.help:
        print(parser.format_help())
        listed, readable = settings_help(gin_files)
        print(listed)
        sys.exit(0 if readable else 2)
    bindings, unknown = gin_flag_bindings(rest)
    bindings = list(args.gin_bindings) + bindings
    if unknown:
        parser.error(f"unrecognised arguments {unknown}; use --gin_file=FILE and --gin.NAME=VALUE")
    return gin_files, bindings


def experiment_gin_files(gin_files: Sequence[str], builtin_task: bool = False,
                         tiny: bool = False) -> list[str]:
    """The gin files a run parses: the experiment's (DEFAULT_GIN_FILE if none), then those of
    the --builtin_task and --tiny switches."""
    return ([*gin_files] or [DEFAULT_GIN_FILE]) + ([BUILTIN_TASK_GIN_FILE] if builtin_task
                                                   else []) + ([TINY_GIN_FILE] if tiny else [])


def gin_flag_bindings(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(bindings, the other arguments): `--gin.NAME=VALUE` -> 'NAME = VALUE'."""
    bindings, others = [], []
    for arg in args:
        if arg.startswith("--gin.") and "=" in arg:
            name, value = arg[len("--gin."):].split("=", 1)
            bindings.append(f"{name} = {value}")
        else:
            others.append(arg)
    return bindings, others


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rso_jax.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this message and every setting of the experiment, then exit")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file to parse (repeatable, applied in order)")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="a binding 'NAME = VALUE' (repeatable)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"shrink the experiment to a one-minute CPU run ({TINY_GIN_FILE})")
    parser.add_argument("--builtin_task", action="store_true",
                        help="run the experiment on the built-in synthetic task instead of its "
                             f"data files ({BUILTIN_TASK_GIN_FILE}); with --tiny, any paper "
                             "config runs in minutes on a CPU with no data")
    return parser


def settings_help(gin_files: Sequence[str]) -> tuple[str, bool]:
    """What each setting means (the run file's header), every macro of `gin_files` with the
    value they give it, and those left REQUIRED that a run reads; and whether the gin files
    could be read."""
    import gin

    with open(os.path.join(REPO_ROOT, RUN_FILE)) as stream:
        header = [line[2:].rstrip() for line in stream if line.startswith("#")]
    gin.clear_config()
    try:
        configure_gin(gin_files, [], allow_required=True)
        values = gin_macros.macro_values()
        required = gin_macros.required_reads(run)
    except GinConfigError as error:
        return f"The settings of {list(gin_files)} could not be read: {error}", False
    finally:
        gin.clear_config()
    width = max(map(len, values), default=0)
    listed = [f"  {name.ljust(width)} = {value!r}" for name, value in sorted(values.items())]
    lines = [f"What the settings mean ({RUN_FILE}):", *(f"  {line}" for line in header), "",
             f"The settings of {' + '.join(gin_files)}; change any with --gin.NAME=VALUE, "
             "strings in quotes (--gin.LOSS=\"'hinge'\"):", *listed]
    if required:
        lines += ["", "REQUIRED: a run needs each of these set (--gin.NAME=VALUE):",
                  *(f"  --gin.{name}=..." for name in required)]
    return "\n".join(lines), True


_UNQUOTED = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([A-Za-z_][\w.]*)\s*$")


def check_binding_values(bindings: Sequence[str]) -> None:
    """Refuses `--gin.LOSS=hinge`: gin reads a bare word as neither a string nor a value, and
    its own error (`malformed node or string`) names neither the setting nor the fix."""
    for binding in bindings:
        match = _UNQUOTED.match(binding)
        if not match or match.group(2) in ("True", "False", "None"):
            continue
        name, word = match.groups()
        if word.lower() in ("true", "false", "none"):
            fix = f"--gin.{name}={word.capitalize()}"
        else:
            fix = (f"--gin.{name}=\"'{word}'\" (a string in quotes; a configurable is "
                   f"@{word}, a macro %{word})")
        raise GinConfigError(f"--gin.{name}={word}: gin cannot read the bare word {word!r} as "
                             f"a value. Write {fix}.")


def configure_gin(gin_files: Sequence[str], bindings: Sequence[str],
                  allow_required: bool = False) -> None:
    """Parses gin files and bindings, turning every gin failure into a GinConfigError; refuses
    a macro that nothing reads (a misspelt setting) and, unless `allow_required`, settings
    left REQUIRED that the run reads."""
    import gin

    for path in (os.getcwd(), REPO_ROOT):
        gin.add_config_file_search_path(path)
    for gin_file in gin_files:
        if not any(os.path.isfile(os.path.join(root, gin_file)) or os.path.isfile(gin_file)
                   for root in (os.getcwd(), REPO_ROOT)):
            raise GinConfigError(f"Gin file {gin_file!r} not found (looked in {os.getcwd()} and "
                                 f"{REPO_ROOT}).")
    try:
        gin.parse_config_files_and_bindings(gin_files, [], finalize_config=False)
        check_binding_values(bindings)
        check_every_macro_is_read(gin_macros.macro_uses(gin_files, bindings))
        gin.parse_config_files_and_bindings([], bindings, finalize_config=False)
    except GinConfigError:
        raise
    except Exception as error:  # gin raises ValueError, KeyError, SyntaxError, ImportError...
        raise GinConfigError(f"Invalid gin configuration ({type(error).__name__}): {error}\n"
                             f"gin files: {list(gin_files)}\nbindings: {list(bindings)}") from error
    if not allow_required:
        check_required_settings(gin_files, gin_macros.required_reads(run))


def experiment_from_gin(gin_files: Sequence[str], bindings: Sequence[str],
                        fill_required: Optional[Callable[[list], list]] = None) -> Any:
    """The `config.Experiment` that gin files and bindings build, with gin cleared first and
    left configured (the caller reads its macros, then clears it). With `fill_required`,
    settings left REQUIRED are allowed and bound to `fill_required(their names)`'s bindings
    (the plan's placeholders)."""
    import gin

    from rso_jax.experiment import config

    gin.clear_config()
    configure_gin(gin_files, bindings, allow_required=fill_required is not None)
    if fill_required is not None:
        gin.parse_config(fill_required(gin_macros.required_macros()))
    return gin.get_configurable(config.Experiment)()


def check_every_macro_is_read(uses: gin_macros.MacroUses) -> None:
    """Refuses a macro that a gin file or binding sets and nothing reads: gin would accept it
    as a new macro (`BEAT = 0.1` or `--gin.BEAT=0.1` would leave BETA as it was). A macro is
    read when a binding refers to it (`%NAME`, directly or through another macro) or a block
    under gin/ sets it for other files or code to read (`gin_macros.MacroUses.known`)."""
    unread = uses.unread()
    if not unread:
        return
    known = sorted(uses.known())
    problems = []
    for setting in unread:
        close = difflib.get_close_matches(setting.name, known, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        where = setting.where if setting.where.startswith("--gin.") else (
            f"{setting.name} ({setting.where})")
        problems.append(f"{where}: nothing in this experiment reads the macro {setting.name} "
                        f"(no binding refers to %{setting.name}), so setting it would change "
                        f"nothing.{hint}")
    raise GinConfigError("\n".join(problems) + "\n`--help` lists the settings of the "
                         f"experiment and {RUN_FILE}'s header says what each means.")


def check_required_settings(gin_files: Sequence[str], required: Sequence[str]) -> None:
    """Refuses to start while settings that the run reads are left `%gin.REQUIRED`."""
    if required:
        raise GinConfigError(
            f"These settings are REQUIRED (left %gin.REQUIRED by {' + '.join(gin_files)}) and "
            "this run reads them; set each on the command line, strings in quotes "
            "(--gin.NAME=\"'...'\"):\n" + "\n".join(f"  --gin.{name}=..." for name in required)
            + "\nThe header of each config file shows its full command; with --tiny "
            "--builtin_task an experiment runs on the built-in task, with no data or checkpoints.")


def run(job: Callable[[], Any], initialize_distributed: str | bool = "auto") -> Any:
    """Starts multi-host JAX when asked for (the log lines then name their process), then runs
    the gin-bound job."""
    from rso_jax import partitioning
    from rso_jax.runtime import processes

    if partitioning.maybe_initialize_distributed(initialize_distributed):
        processes.tag_log_lines()
    return job()


def without_gin_notes(error: Exception) -> str:
    """The error's message without the '  In call to configurable ...' lines gin appends."""
    return "\n".join(line for line in str(error).splitlines()
                     if not line.startswith("  In call to configurable "))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the job; returns the exit status: 0, 1 (a failure, said in one line, with the
    traceback in the run's log file), 2 (a bad flag or gin setting), or 128 + the signal's
    number after Ctrl-C (130) or SIGTERM (143) stopped the run at a safe point."""
    import gin

    from rso_jax.runtime import run_log, stop_signals

    run_log.configure_console()
    with stop_signals.listening():  # from here on Ctrl-C raises nothing where it lands
        gin_files, bindings = parse_flags(sys.argv[1:] if argv is None else argv)
        cpu_tuning.restrict_ynnpack_to_dots()  # before any JAX computation; CPU backend only
        try:
            configure_gin(gin_files, bindings)
            configured_run = gin.get_configurable(run)
        except GinConfigError as error:
            print(f"rso_jax.main: {error}", file=sys.stderr)
            return 2
        work_dir = _configured_work_dir()
        log = run_log.open_file(work_dir) if work_dir else None
        try:
            configured_run()
        except Exception as error:
            return _failure_exit_code(error, log)
        finally:
            if log is not None:
                run_log.close_file(log)
    return 0


def _configured_work_dir() -> Optional[str]:
    """WORK_DIR as gin binds it, or None (a job without one, or a REQUIRED one not given)."""
    import gin

    try:
        work_dir = gin.query_parameter("%WORK_DIR")
    except ValueError:
        return None
    return work_dir if isinstance(work_dir, str) else None


def stopped_line(stopped: Exception) -> str:
    """What a run stopped by a signal says: 'interrupted: sample: Ctrl-C (SIGINT) received;
    ...' (`stop_signals.Stopped`, with the stage it stopped in)."""
    from rso_jax.runtime import failures

    stage = failures.stage_of(stopped)
    return f"{stopped.kind}: {f'{stage}: ' if stage else ''}{without_gin_notes(stopped)}"


def _failure_exit_code(error: Exception, log: Optional[Any]) -> int:
    """Says in one line why the run stopped (the stage, and for a failure of the file system
    the path; the traceback goes to the run's log file `log`, a `run_log.RunLog`, only) and
    returns the exit status; re-raises an error of no known kind (a bug), whose traceback the
    console shows too."""
    from rso_jax.runtime import failures, stop_signals

    if isinstance(error, stop_signals.Stopped):  # not a failure: one line, here and in the log
        line = stopped_line(error)
        if log is not None:
            log.record(line)
        print(f"rso_jax.main: {line}", file=sys.stderr)
        return error.exit_code
    stage = failures.stage_of(error)
    os_failure = failures.os_failure(error)
    if os_failure is not None:
        line = failures.describe_os_failure(os_failure, stage)
    elif isinstance(error, (OSError, ValueError, FloatingPointError)):  # a path, a setting, NaN
        line = (f"{f'stage {stage}: ' if stage else ''}{type(error).__name__}: "
                f"{without_gin_notes(error)}")
    else:
        line = None
    if log is not None:
        log.record(line or "The run failed:", error)
    if line is None:
        raise error
    print(f"rso_jax.main: {line}", file=sys.stderr)
    if log is not None and log.written:
        if os_failure is not None:
            print(f"rso_jax.main: the full traceback is in {log.path}", file=sys.stderr)
    elif os_failure is not None:  # the log could not keep it (on the disk that filled, say)
        import traceback

        print("rso_jax.main: the run's log could not be written, so here is the traceback:",
              file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)
    return 1


if __name__ == "__main__":
    from rso_jax import main as entry_point  # the module gin files import, not __main__

    sys.exit(entry_point.main())
