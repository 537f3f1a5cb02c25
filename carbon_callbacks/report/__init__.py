"""After-training tools: they read run logs (and carbontracker's) and never run during training.

``collect`` gathers logs, ``statement`` writes the paper's sentence and tables, ``regions`` the
what-if across grids, ``estimate`` a prediction before any run, ``plots`` the figures and
``selection`` model selection under a carbon budget.
"""
