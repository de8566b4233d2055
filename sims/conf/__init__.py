"""Hydra configs of the sims apps (a package so that the apps also run in-process: `sims.convergence.main()`)."""
