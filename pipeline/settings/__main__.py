"""``python -m pipeline.settings``: print the configuration table; ``--write-docs`` regenerates the tables in
docs/OPERATIONS.md."""

import argparse

from pipeline.settings import docs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.settings", description=__doc__)
    parser.add_argument("--markdown", metavar="GROUPS", nargs="?", const="all",
                        help="print the table of GROUPS (all, or names separated by commas)")
    parser.add_argument("--write-docs", action="store_true", help="regenerate the tables in docs/OPERATIONS.md")
    args = parser.parse_args()
    if args.write_docs:
        print("docs/OPERATIONS.md " + ("updated" if docs.write() else "already up to date"))
    else:
        print(docs.table(args.markdown or "all"), end="")


main()
