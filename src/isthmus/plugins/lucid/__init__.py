"""lucid: the first guide's Lucid surface (pilot_submit, task_submit, task_wait) on top of pilot pools."""
