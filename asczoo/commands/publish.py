"""``asczoo publish RUN_DIR --repo org/name``: upload a trained model with its card in one commit."""

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
    parser.add_argument("--dry-run", metavar="DIR", default=None,
                        help="write the folder that would be uploaded to DIR and upload nothing")


def run(args) -> int:
    from asczoo.training.publish import publish_run

    result = publish_run(
        args.run_dir, args.repo, private=args.private or None, revision=args.revision,
        commit_message=args.message, license=args.license, dry_run_dir=args.dry_run,
    )
    if args.dry_run:
        print(f"dry run: would upload {', '.join(result)} to {args.repo} (written to {args.dry_run})")
    else:
        url = getattr(result, "commit_url", None) or getattr(result, "oid", "")
        print(f"published {args.run_dir} to {args.repo}: {url}")
    return 0
