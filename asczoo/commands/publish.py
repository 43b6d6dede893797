"""``asczoo publish RUN_DIR --repo org/name [--space]``: upload a trained model with its card in one commit,
and with ``--space`` the Hugging Face Space that serves its demo page."""

from __future__ import annotations

COMMAND = "publish"
HELP = "publish a training run's model to the Hugging Face Hub (weights, config, card) in one commit"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory, or a saved model folder")
    parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub repository (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, metavar="BRANCH", help="branch to commit to (created if missing)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--license", default=None, help="license identifier for the card (default apache-2.0)")
    parser.add_argument("--space", nargs="?", const="", default=None, metavar="ORG/NAME",
                        help="also create or update the Hugging Face Space that serves the model's demo page "
                             "(app.py, requirements.txt, card; the page of `asczoo demo`), default ORG/NAME: "
                             "the model's repository id + '-demo'")
    parser.add_argument("--dry-run", metavar="DIR", default=None,
                        help="write the folder that would be uploaded to DIR (the Space's files to DIR/space) and "
                             "upload nothing")


def run(args) -> int:
    from asczoo.hub.space import default_space_id
    from asczoo.training.publish import publish_run

    space = None if args.space is None else (args.space or default_space_id(args.repo))
    result = publish_run(
        args.run_dir, args.repo, private=args.private or None, revision=args.revision,
        commit_message=args.message, license=args.license, dry_run_dir=args.dry_run, space_id=space,
    )
    if args.dry_run:
        print(f"dry run: would upload {', '.join(n for n in result if '/' not in n)} to {args.repo}"
              + (f" and {', '.join(n for n in result if '/' in n)} to the Space {space}" if space else "")
              + f" (written to {args.dry_run})")
    else:
        url = getattr(result, "commit_url", None) or getattr(result, "oid", "")
        print(f"published {args.run_dir} to {args.repo}: {url}")
        if space:
            print(f"demo page: https://huggingface.co/spaces/{space} "
                  f"({getattr(result.space_commit, 'commit_url', '')})")
    return 0
