"""insmon's daemon core: config, scheduler, runner, results store, service, CLI."""

from vocabulary import VERSION

__version__ = VERSION
