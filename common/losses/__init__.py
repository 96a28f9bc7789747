"""The loss layer shared by the retrieval methods: the loss contract (``base``), numerics, proxy losses and the
pytorch-metric-learning adapter."""
