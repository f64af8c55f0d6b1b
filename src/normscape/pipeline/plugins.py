"""Your own norms, backbones and datasets without editing the package: plugin files.

A plugin is a Python file that calls the registries' ``register`` functions (``normscape.models.norms.register``,
``normscape.data.datasets.register``, ...). The config lists them (``plugins: [my_norms.py]``, paths relative to the
directory Snakemake runs in); the workflow imports them before it validates the config (so their names are
allowed values), and so does every job before it runs (:func:`normscape.pipeline.runtime.script_main`), so a registered
norm is trained, measured and drawn exactly like the built-in ones. What a plugin defines is part of the
identity of the runs that use it (:func:`normscape.models.norms.code_digest`): edit a plugin's norm and its runs train
again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from normscape.pipeline.errors import ConfigError

_LOADED: dict[Path, str] = {}  # resolved path -> module name, so a file is imported once per process


def module_name(path: Path) -> str:
    """A stable, importable module name for a plugin file (the same in every process: classes pickle by it)."""
    return f"normscape_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def load_plugins(paths: list[str] | None) -> list[str]:
    """Import every plugin file in ``paths`` (once per process); the module names, in order.

    A missing file, or one that fails while it runs, is one :class:`ConfigError` naming the file and the
    config key; the plugin's own exception is in the message."""
    names = []
    for entry in paths or []:
        path = Path(entry).expanduser().resolve()
        if path in _LOADED:
            names.append(_LOADED[path])
            continue
        if not path.is_file():
            raise ConfigError(f"plugins: {entry!r} is not a file ({path}). Fix the path in the config's plugins list.")
        name = module_name(path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # inspect.getsource (code digests) and pickling find it by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(
                f"plugin {path} failed while it was imported: {type(exc).__name__}: {exc}. Fix the plugin (it is "
                "listed under the config's plugins)."
            ) from None
        _LOADED[path] = name
        names.append(name)
    return names
