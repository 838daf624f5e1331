"""What jobs (psij) and tasks (tasks) may run, with which environment, writing where.

One module, used by both plugins, so each rule exists once:

* **Executables** resolve (PATH, then ``realpath``) before they are matched against
  ``allowed_executables``: ``/usr/bin/../../tmp/x`` is ``/tmp/x``, not something under
  ``/usr/bin``. The resolved path is what runs.
* **Environment.** Jobs and tasks never inherit the edge's environment: they get an
  allow-list of variables taken from it (:data:`DEFAULT_PASSTHROUGH` plus the admin's
  ``env_passthrough``) and what the spec sets. Variables named ``ISTHMUS_*`` (the edge's
  enrolment token, its config overrides) and variables whose value carries such a secret
  never pass, even when allow-listed.
* **Loader variables** (``LD_PRELOAD``, ``BASH_ENV``, ``PYTHONPATH`` ...) change what code a
  program runs before its own; a spec may set them only when the admin lists them in
  ``allowed_loader_variables``.
* **Text that reaches a batch script** carries no control characters: a newline in an
  account name would be a new line of the script.
* **Output paths** never name a dot-file or dot-directory directly in ``$HOME``
  (``~/.bashrc``, ``~/.ssh/authorized_keys``): writing there runs code at the next login.
"""

from __future__ import annotations

import fnmatch
import glob
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..errors import PluginError

# Variables a job gets from the edge's environment unless the admin adds more.
DEFAULT_PASSTHROUGH: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TERM",
    # what scheduler clients inside a job need to find their configuration
    "SLURM_CONF", "PBS_CONF_FILE", "LSF_ENVDIR", "LSF_SERVERDIR", "FLUX_URI",
)
DEFAULT_EXECUTABLES: tuple[str, ...] = ("/bin/*", "/usr/bin/*", "/usr/local/bin/*", "~/*")
# Names that hold Isthmus secrets or settings: never handed to a job.
SECRET_PREFIXES: tuple[str, ...] = ("ISTHMUS_",)
_MIN_SECRET = 8  # shorter values are too common to treat as secrets when seen inside other values
# Variables that make a program (or its loader, shell or interpreter) run other code first.
LOADER_VARIABLES: tuple[str, ...] = (
    "LD_*", "DYLD_*", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF",
    "BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONWARNINGS", "PYTHONBREAKPOINT",
    "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE",
    "PERL5LIB", "PERLLIB", "PERL5OPT", "PERL5DB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "LUA_INIT", "LUA_PATH", "LUA_CPATH",
    "TCLLIBPATH", "OPENSSL_CONF", "OPENSSL_ENGINES",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class JobPolicyConfig(BaseModel):
    """The config keys psij and tasks share (same names, same defaults, same meaning)."""

    allow_any_executable: bool = Field(False, description="Skip the executable (and psij's directory) allow-lists "
                                                          "(isthmus demo turns this on).")
    allowed_executables: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXECUTABLES),
        description="Glob patterns of executables (after resolving PATH, '..' and symlinks) that may run.")
    env_passthrough: list[str] = Field(
        default_factory=list,
        description="More variables (fnmatch patterns) jobs get from the edge's environment, on top of "
                    + ", ".join(DEFAULT_PASSTHROUGH) + ". ISTHMUS_* never passes.")
    allowed_loader_variables: list[str] = Field(
        default_factory=list,
        description="Loader variables (fnmatch patterns, e.g. LD_LIBRARY_PATH) a job spec may set; by default "
                    "LD_*, BASH_ENV, PYTHONPATH and the like are refused.")


# -- text -------------------------------------------------------------------------------------------


def check_text(value: str, what: str = "value") -> str:
    """``value`` unless it holds a control character (< 0x20 or 0x7f): those start new script lines."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"{what} contains the control character {ord(found.group()):#04x}; "
                         "control characters (newlines too) are not allowed here")
    return value


def check_number(value: float, what: str, maximum: float) -> float:
    """A finite number in (0, maximum]: inf, nan and absurd values are refused, not crashed on."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number")
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise ValueError(f"{what} must be a positive, finite number of at most {maximum:g}, not {value!r}")
    return value


# -- executables ------------------------------------------------------------------------------------


def _resolve_pattern(pattern: str) -> str:
    """The pattern with ``~`` expanded and its literal directory part resolved like executables are.

    ``/bin/*`` on a merged-/usr system becomes ``/usr/bin/*``, so it still matches what
    ``/bin/echo`` resolves to.
    """
    pattern = os.path.expanduser(pattern)
    if not glob.has_magic(pattern):
        return os.path.realpath(pattern)
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    head = os.path.dirname(literal)
    if not head:
        return pattern
    return os.path.join(os.path.realpath(head), pattern[len(head):].lstrip("/"))


def resolve_executable(executable: str, allowed: Iterable[str], allow_any: bool = False,
                       path: str | None = None) -> str:
    """The real path of ``executable``, which is what must run; 422 or 403 when it may not.

    A bare name is looked up on ``path`` (default: the edge's PATH); the result is resolved
    with ``realpath`` (``..``, symlinks) and only that is matched against ``allowed``.
    """
    check_text(executable, "executable")
    found = shutil.which(executable, path=path) if "/" not in executable else executable
    if found is None:
        raise PluginError(f"executable {executable!r} is not on the edge's PATH", 422)
    real = os.path.realpath(os.path.expanduser(found))
    if allow_any:
        return real
    patterns = list(allowed)
    if not any(fnmatch.fnmatchcase(real, _resolve_pattern(p)) for p in patterns):
        raise PluginError(f"executable {real} is not allowed here (allowed_executables: "
                          f"{', '.join(patterns) or 'none'}; allow_any_executable is off)", 403)
    return real


# -- paths ------------------------------------------------------------------------------------------


def real_path(value: str) -> Path:
    """``value`` with ``~`` expanded and resolved (``..``, symlinks), as the job will see it."""
    return Path(os.path.realpath(os.path.expanduser(value)))


def check_output_path(label: str, value: str) -> Path:
    """The resolved output path; 403 when it is (inside) a dot-file directly in ``$HOME``."""
    path = real_path(value)
    home = Path(os.path.realpath(os.path.expanduser("~")))
    try:
        first = path.relative_to(home).parts[:1]
    except ValueError:
        return path
    if first and first[0].startswith("."):
        raise PluginError(f"{label} {value} resolves to {path}, a dot-file in the home directory "
                          f"({home}/{first[0]}): jobs may not write there", 403)
    return path


# -- environment ------------------------------------------------------------------------------------


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_secret_name(name: str) -> bool:
    return name.upper().startswith(SECRET_PREFIXES)


def secret_values(environ: Mapping[str, str]) -> set[str]:
    """Values of the secret variables in ``environ`` (long enough to be recognised elsewhere)."""
    return {v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET}


def _carries_secret(value: str, secrets: set[str]) -> bool:
    return any(s in value for s in secrets)


def passthrough_environment(extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process's) a job may see: allow-listed, never secret."""
    environ = os.environ if environ is None else environ
    patterns = (*DEFAULT_PASSTHROUGH, *extra)
    secrets = secret_values(environ)
    return {k: v for k, v in environ.items()
            if _matches(k, patterns) and not is_secret_name(k) and not _carries_secret(v, secrets)}


def check_environment(env: Any, allowed_loader: Iterable[str] = (), field: str = "environment") -> dict[str, str]:
    """A job spec's environment, validated: names, values, no reserved names, no loader variables.

    Raises ValueError naming the variable (callers answer 422); for a loader variable the
    message also names the config key an admin sets to allow it.
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"{field} must be an object of NAME: value")
    allowed = list(allowed_loader)
    clean: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ValueError(f"{field}: {name!r} is not a valid environment variable name")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{field}.{name} must be a string or a number")
        text = check_text(str(value), f"{field}.{name}")
        if is_secret_name(name):
            raise ValueError(f"{field}.{name}: names starting with {', '.join(SECRET_PREFIXES)} are reserved "
                             "for Isthmus")
        if _matches(name, LOADER_VARIABLES) and not _matches(name, allowed):
            raise ValueError(f"{field}.{name} changes which code programs load and is refused on this edge; an "
                             f"admin can allow it with the plugin's config key allowed_loader_variables: [{name}]")
        clean[name] = text
    return clean


def build_environment(spec_env: Mapping[str, str], extra_passthrough: Iterable[str] = (), inherit: bool = True,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of a job: the passthrough variables (when ``inherit``) and the spec's.

    ``spec_env`` must come from :func:`check_environment`; ``base`` is a precomputed
    :func:`passthrough_environment` (callers that build many environments compute it once).
    """
    if not inherit:
        return dict(spec_env)
    if base is None:
        base = passthrough_environment(extra_passthrough)
    return {**base, **spec_env}


def scrub_environ() -> dict[str, str]:
    """Remove secrets from this process's environment (``os.environ`` and the C environment).

    Worker processes call it at start, so code they run finds no secret there. Returns what
    was removed (the tasks plugin puts it back after starting its forkserver).
    """
    secrets = secret_values(os.environ)
    removed = {k: v for k, v in os.environ.items() if is_secret_name(k) or _carries_secret(v, secrets)}
    for name in removed:
        os.environ.pop(name, None)
    return removed
