"""Command line entry point (filled in by the CLI module)."""


def main() -> int:  # pragma: no cover - placeholder until the CLI lands
    raise SystemExit("cianna-otf: not implemented yet")
