"""Where nodes are (sites → rooms → racks → slots) and how healthy they are."""
