"""Real tasks on real data (shipped inside packages of the ``data`` extra).

Importing this package registers the tasks; no data is read and nothing is trained until a
task is used (see ``problems.real.task``). ``problems.real.data`` has the loaders.
"""

from problems.real import knn, l2x, sort_digits, topic, tsne, vae  # noqa: F401  (registers)
