"""Hydra plugins of icu-backdoor. Hydra loads sweepers only from the ``hydra_plugins`` namespace
package, so this one lives here rather than in ``src/``."""
