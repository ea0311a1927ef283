"""exported/NAME -> timings: the bench wing (run.py times, baselines.py builds what the graph
is compared with, chart.py draws it)."""

from .run import bench

__all__ = ["bench"]
