"""Pure geo logic: great-circle distances and the H3-indexed restaurant table."""
