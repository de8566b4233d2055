"""The low-data table-to-text study of the prefix structures, as a library (the app experiments/low_data.py is thin).

Modules:
    settings   the typed checks of every setting (once, before any work), the setting fingerprint, cells, paths
    pool       one dataset's encoded training, dev and test rows
    protocol   record-keeping shared by the protocols
    tuned      the per-n tuned protocol (low_data.lr_selection=per_n): one run at a time, the lr tuned once per n
               with the edge-extension rule and reused for the other replicates, convergence status per run
"""
