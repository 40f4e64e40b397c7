"""What a gin configuration says about its macros (the settings: BETA, WORK_DIR, ...): their
values, where the gin files and bindings set them and which of them anything reads, which
settings left `%gin.REQUIRED` a job would read, and which macro sets each parameter.

`macro_setting` is the one table of which macro sets which parameter (`config.Lengths.prompt`
-> PROMPT_LENGTH), read from the blocks under gin/ that bind them, so that no code repeats the
gin bindings: error messages name the macro a user sets, also when a config is built without gin.

The one module that reads gin's internals (`gin.config._CONFIG`, `_LOCATION_PREFIXES`,
`ConfigurableReference`); `rso_jax.main` turns what it finds into start-up errors.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import rso_jax

LIBRARY_DIR = os.path.join(rso_jax.REPO_ROOT, "gin")
_REQUIRED_KEY = ("gin.REQUIRED", "gin.constant")  # what `%gin.REQUIRED` refers to


def macro_values() -> dict[str, Any]:
    """Every macro the parsed gin config defines, with its value (gin keeps a macro as the
    scope of `gin.macro`; a REQUIRED one's value reads `%gin.REQUIRED`)."""
    import gin

    return {scope: entry["value"] for (scope, selector), entry in gin.config._CONFIG.items()
            if selector == "gin.macro"}


def is_required(value: Any) -> bool:
    """Whether a bound value is gin's REQUIRED marker (`%gin.REQUIRED` or `gin.REQUIRED`)."""
    import gin

    return value is gin.REQUIRED or (isinstance(value, gin.config.ConfigurableReference)
                                     and value.config_key == _REQUIRED_KEY)


def required_macros() -> list[str]:
    """The macros of the parsed gin config whose value is still `%gin.REQUIRED`."""
    return [name for name, value in macro_values().items() if is_required(value)]


def required_reads(job: Callable) -> list[str]:
    """The settings left REQUIRED that calling the gin-configured `job` would read, in the
    order its bindings reach them: each macro whose value is `%gin.REQUIRED`, reached through
    the job's bindings, the configurables they call and the macros they refer to; or
    'config.Lengths.prompt' (as gin files write it) for a parameter bound to REQUIRED directly.
    Code that reads gin on its own (`gin.query_parameter`) is not followed."""
    import gin

    config = gin.config._CONFIG
    by_selector: dict[str, list[str]] = {}
    for scope, selector in config:
        by_selector.setdefault(selector, []).append(scope)
    found: list[str] = []
    visited: set = set()

    def visit_value(value: Any, name: str, scopes: tuple) -> None:
        if is_required(value):
            found.append(name)
        elif isinstance(value, gin.config.ConfigurableReference):
            scope, selector = value.config_key
            if selector == "gin.macro":  # a macro is gin.macro's binding in its own scope
                if (scope, selector) in config and (scope, selector) not in visited:
                    visited.add((scope, selector))
                    visit_value(config[(scope, selector)]["value"], scope, scopes)
            else:
                visit_configurable(selector, (*scopes, *value.scopes),
                                   lambda param: f"{_short(selector)}.{param}")
        elif isinstance(value, dict):
            for item in value.items():
                visit_value(item, name, scopes)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                visit_value(item, name, scopes)

    def visit_configurable(selector: str, scopes: tuple, name_of: Callable[[str], str]) -> None:
        for scope in by_selector.get(selector, []):  # gin applies a scope's bindings inside it
            if not set(filter(None, scope.split("/"))) <= set(scopes):
                continue
            key = (scope, selector, frozenset(scopes))
            if key in visited:
                continue
            visited.add(key)
            for param, value in config[(scope, selector)].items():
                visit_value(value, name_of(param), scopes)

    start = f"{job.__module__}.{job.__qualname__}"
    visit_configurable(start, (), lambda param: f"{_short(start)}.{param}")
    return list(dict.fromkeys(found))


def _short(selector: str) -> str:
    """'rso_jax.experiment.config.Experiment' -> 'config.Experiment', as gin files write it."""
    return ".".join(selector.split(".")[-2:])


@dataclasses.dataclass(frozen=True)
class MacroSetting:
    """A statement that sets a macro."""

    name: str
    where: str  # 'configs/x.gin:12' or '--gin.NAME' (a binding)
    in_library: bool  # in a block under gin/, which may set macros for other files to read


@dataclasses.dataclass(frozen=True)
class MacroUses:
    """Every macro the gin files (with what they include) and the bindings set, and every
    macro any of their statements refers to (`%NAME`), whether or not a later one overrides it."""

    settings: tuple[MacroSetting, ...]
    references: frozenset[str]

    def unread(self) -> list[MacroSetting]:
        """The settings of macros that nothing refers to and no block under gin/ sets."""
        known = self.known()
        return [setting for setting in self.settings if setting.name not in known]

    def known(self) -> set[str]:
        """Macros that are read: referred to anywhere, or set by a block under gin/ (blocks
        define some for other gin files or code to read: SFT_TASK and PREFERENCE_TASK for a
        T5X run over the seqio tasks, T5_1_1_LARGE for `rso_jax.t5.model_sizes`)."""
        return set(self.references) | {s.name for s in self.settings if s.in_library}


def macro_uses(gin_files: Sequence[str], bindings: Sequence[str]) -> MacroUses:
    """Reads the statements of `gin_files` (following their includes, found as gin finds them)
    and of `bindings`, as gin parses them, without binding anything."""
    from gin import config_parser

    references: set[str] = set()

    class Recorder(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_configurable_name, evaluate):
            return None

        def macro(self, macro_name):
            references.add(macro_name)
            return None

    def statements(text_or_file: Any) -> Iterator[Any]:
        yield from config_parser.ConfigParser(text_or_file, Recorder())

    def file_settings(gin_file: str) -> Iterator[MacroSetting]:
        path = _find_gin_file(gin_file)
        in_library = os.path.realpath(path).startswith(os.path.realpath(LIBRARY_DIR) + os.sep)
        with open(path) as stream:
            for statement in statements(stream):
                if isinstance(statement, config_parser.IncludeStatement):
                    yield from file_settings(statement.filename)
                elif _is_macro(statement):
                    yield MacroSetting(_macro_name(statement),
                                       f"{gin_file}:{statement.location.line_num}", in_library)

    settings = [setting for gin_file in gin_files for setting in file_settings(gin_file)]
    for binding in bindings:
        for statement in statements(binding):
            if _is_macro(statement):
                name = _macro_name(statement)
                settings.append(MacroSetting(name, f"--gin.{name}", False))
    return MacroUses(tuple(settings), frozenset(references))


def _is_macro(statement: Any) -> bool:
    from gin import config_parser

    return isinstance(statement, config_parser.BindingStatement) and not statement.arg_name


def _macro_name(statement: Any) -> str:
    return f"{statement.scope}/{statement.selector}" if statement.scope else statement.selector


def _find_gin_file(gin_file: str) -> str:
    """Where gin's `parse_config_file` finds `gin_file` (the first search path holding it)."""
    import gin

    prefixes = [""] if os.path.isabs(gin_file) else gin.config._LOCATION_PREFIXES
    for prefix in prefixes:
        if os.path.isfile(os.path.join(prefix, gin_file)):
            return os.path.join(prefix, gin_file)
    raise FileNotFoundError(f"Gin file {gin_file!r} not found (searched {prefixes}).")


def macro_setting(configurable: str, param: str, scope: str = "") -> Optional[str]:
    """The macro that the blocks under gin/ bind `configurable`'s `param` to, in gin `scope`.

    Args:
      configurable: as gin files write it, '<module>.<name>' ('config.Lengths',
        'readers.data_files').
      param: the parameter ('prompt').
      scope: the gin scope of the binding ('sft' for `sft/config.TrainingSchedule`).

    Returns:
      the macro's name ('PROMPT_LENGTH', 'SFT_STEPS'), or None when no block binds it to one.
    """
    bindings = library_bindings()  # an unscoped binding applies in every scope, as in gin
    return bindings.get((scope, configurable, param)) or bindings.get(("", configurable, param))


@functools.lru_cache(maxsize=None)
def library_bindings() -> dict[tuple[str, str, str], str]:
    """{(scope, configurable, param): macro} for every parameter bound to a macro (`x = %NAME`)
    by a gin file under gin/, read as gin parses them, without binding anything. A parameter
    that two blocks bind to different macros is a ValueError naming both files."""
    from gin import config_parser

    class Macro(str):
        pass

    class Reader(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_configurable_name, evaluate):
            return None

        def macro(self, macro_name):
            return Macro(macro_name)

    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    for path in sorted(glob.glob(os.path.join(LIBRARY_DIR, "**", "*.gin"), recursive=True)):
        with open(path) as stream:
            for statement in config_parser.ConfigParser(stream, Reader()):
                if (not isinstance(statement, config_parser.BindingStatement)
                        or not statement.arg_name or not isinstance(statement.value, Macro)
                        or statement.value == "gin.REQUIRED"):
                    continue
                key = (statement.scope or "", _short(statement.selector), statement.arg_name)
                where = f"{os.path.relpath(path, LIBRARY_DIR)}:{statement.location.line_num}"
                if key in found and found[key][0] != statement.value:
                    raise ValueError(
                        f"{'/'.join(filter(None, key[:2]))}.{key[2]} is bound to "
                        f"%{found[key][0]} in gin/{found[key][1]} and to %{statement.value} in "
                        f"gin/{where}; bind each parameter to one macro.")
                found.setdefault(key, (str(statement.value), where))
    return {key: macro for key, (macro, _) in found.items()}
