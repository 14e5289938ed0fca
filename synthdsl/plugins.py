"""The public API of plugins: a user's own layers, operations and kinds of source.

A plugin is a module the user loads (``synth --plugin mypkg.layers ...``,
``SYNTHDSL_PLUGINS=mypkg.layers``, or :func:`load_plugin`); when imported it calls
:func:`register_layer`, :func:`register_op` or :func:`register_source_kind`.
See :mod:`synthdsl.library.plugins` and docs/language.md ("Plugins").
"""

from synthdsl.library.layers import LayerArgError, Option
from synthdsl.library.plugins import (ENTRY_POINT_GROUP, ENV, installed, is_loaded,
                                      load_plugin, load_plugins, register_layer, register_op,
                                      register_source_kind)
from synthdsl.library.sources import SourceKind

__all__ = ["ENTRY_POINT_GROUP", "ENV", "LayerArgError", "Option", "SourceKind", "installed",
           "is_loaded", "load_plugin", "load_plugins", "register_layer", "register_op",
           "register_source_kind"]
