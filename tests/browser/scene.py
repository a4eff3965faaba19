"""A fleet as an operator meets it, for the browser tests and the docs' pictures: nodes
with the long names real fleets have, work in every state, a worker that died and the
sweep run that moved its tasks, a cordon, labels, a running task with its payload and
progress."""

from datetime import timedelta

from django.utils import timezone

from accounts.models import User
from nodes.services import node_cordon, node_set_labels
from tasks.actor import acting_as
from tasks.models import Task, TaskStatus
from tasks.services import sweep_run
from tests.factories import AdminFactory, NodeFactory, TaskFactory

JOBS = [
    "Transcode episode 42 to 1080p",
    "Rebuild the search index (eu)",
    "Export March invoices",
    "Resize product images, batch 17",
    "Send the weekly digest emails",
    "Compute the nightly sales report",
    "Backfill click metrics for May",
    "Verify the offsite backups",
]


def operator_scene(settings) -> dict:
    """The fleet after one worker died: its open tasks moved by one sweep run (one was
    running and failed first), an expired task failed in the same run, a cordoned node
    and a node never seen holding work at risk. Returns the nodes, the admin and the
    tasks the pictures show."""
    settings.FAILOVER = "reassign"
    now = timezone.now()
    admin = AdminFactory(name="Dana Ops", email="dana@example.com")
    gpu = NodeFactory(name="gpu-worker-eu-west-1a.prod", email="gpu-1a@example.com")
    batch = NodeFactory(name="batch-runner-us-east-2b-spot", email="batch-2b@example.com")
    render = NodeFactory(name="render-farm-node-17", email="render17@example.com")
    media = NodeFactory(name="media-transcoder-eu-central-1c", email="media-1c@example.com")
    User.objects.filter(pk__in=[gpu.pk, media.pk]).update(last_seen=now - timedelta(seconds=3))
    User.objects.filter(pk=batch.pk).update(last_seen=now - timedelta(minutes=4))
    node_set_labels(node=gpu, labels={"gpu": "true", "zone": "eu-west-1a"}, actor=admin)
    node_set_labels(node=media, labels={"zone": "eu-central-1c"}, actor=admin)
    node_set_labels(node=batch, labels={"spot": "yes", "zone": "us-east-2b"}, actor=admin)

    # Created by the admin, as through the API or the admin site: history names her.
    with acting_as(admin):
        work = create_work(now, gpu=gpu, batch=batch, render=render, media=media)
    node_cordon(node_id=media.pk, reason="kernel upgrade at 16:00 UTC", actor=admin)
    run, _ = sweep_run(batch_size=100)
    return {
        "admin": admin,
        "gpu": gpu,
        "batch": batch,
        "render": render,
        "media": media,
        "run": run,
        **work,
    }


def create_work(now, *, gpu, batch, render, media) -> dict:
    """The scene's tasks: a running one with its payload and progress, finished work,
    the dead node's open tasks, the never-seen node's, one about to expire, one failed."""
    numbers = iter(range(1040, 1100))

    def jobs(count, node, **fields):
        return [
            TaskFactory(
                name=f"{JOBS[number % len(JOBS)]} #{number}",
                assigned_node=node,
                locked_at=now + timedelta(hours=6 + number % 20),
                **fields,
            )
            for number in (next(numbers) for _ in range(count))
        ]

    running = TaskFactory(
        name="Transcode episode 42 to 1080p",
        assigned_node=gpu,
        status=TaskStatus.IN_PROGRESS,
        attempts=1,
        locked_at=now + timedelta(hours=2),
        payload={
            "source": "s3://media/raw/episode-042.mov",
            "preset": "1080p-h264",
            "frames": 2400,
        },
        progress_percent=59.2,
        progress_message="frame 1,420 of 2,400",
        progress_updated_at=now - timedelta(seconds=2),
        checkpoint={"frame": 1420},
    )
    Task.objects.filter(pk=running.pk).update(updated_at=now - timedelta(minutes=4, seconds=10))
    jobs(3, gpu, status=TaskStatus.COMPLETED)
    jobs(4, media)
    jobs(2, media, status=TaskStatus.COMPLETED)
    lost = jobs(5, batch) + jobs(1, batch, status=TaskStatus.IN_PROGRESS, attempts=1)
    at_risk = jobs(4, render)
    expired = jobs(1, media)
    Task.objects.filter(pk=expired[0].pk).update(locked_at=now - timedelta(minutes=2))
    failed = TaskFactory(
        name="Import the supplier price list",
        assigned_node=media,
        status=TaskStatus.FAILED,
        failure_cause="node_reported",
        failure_reason="supplier feed answered 503 three times",
    )
    return {"running": running, "lost": lost, "at_risk": at_risk, "failed": failed}
