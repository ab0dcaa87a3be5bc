"""Pure log parsing: a byte stream -> lines -> metric points (name, value, step, epoch).

No imports from `runner` or `adapters`: parsers are data-driven (regex specs from the registry)
and testable on captured output alone.
"""

from .stream import LineAssembler
from .generic import GenericParser
from .regex import RegexParser, build_parser

__all__ = ["LineAssembler", "GenericParser", "RegexParser", "build_parser"]
