"""The plugin SDK: base classes, client, UI schema, menus, registry."""
