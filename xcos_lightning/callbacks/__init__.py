"""Lightning callbacks of xcos-lightning (explanation monitoring during training lands here)."""
