"""The pygame labeling app: two clips side by side, one key press per answer.

Modules: ``app`` (window and event loop), ``layout`` (where things go, the HUD),
``playback`` (looping clips in sync), ``prepare`` (the background pair worker), ``session``
(answers, undo and claims in the store), ``commands`` (what ``rlhf label`` runs).
pygame is imported only when the viewer is used.
"""

from rlhf.viewer.commands import ViewerError, label, run_config, screenshot, wait_for_run

__all__ = ["ViewerError", "label", "run_config", "screenshot", "wait_for_run"]
