"""The node page in the admin site (admin/node/<id>/, routed by tasks.admin_site):
the node's liveness and its deactivation here, its work's panels and reassign
from nodes.work."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.services import user_deactivate
from nodes import heartbeats
from nodes.forms import DrainForm, MaintenanceForm, ReasonForm, UncordonForm
from nodes.models import Liveness, MaintenanceWindow, Node, NodeEvent, NodeState, node_state
from nodes.services import (
    NotCordoned,
    WindowNotComing,
    drain_deadline_default,
    node_cordon,
    node_drain,
    node_maintenance_cancel,
    node_maintenance_schedule,
    node_uncordon,
)
from nodes.work import node_work
from taskmgmt.confirmation import confirmation_page
from taskmgmt.moments import moment

EVENT_ROWS = 20
NOT_COMING = "Only a coming window of this node can be cancelled."


def node_view(site, request, node_id):
    heartbeats.flush()
    now = timezone.now()
    node = Node.objects.with_liveness(now).filter(pk=node_id).first()
    if node is None:
        raise Http404("No node has this id.")
    if request.method == "POST" and request.POST.get("action") == "deactivate":
        return deactivate(site, request, node)
    scheduling = scheduling_forms(site, request, node)
    if isinstance(scheduling, HttpResponse):
        return scheduling
    work = node_work().node_page(request, node, now)
    if isinstance(work, HttpResponse):
        return work
    posted_forms = [*scheduling.values(), work.get("form")]
    if any(form is not None and form.errors for form in posted_forms):
        # The page comes back at its top, far above the refused form's own error.
        messages.error(request, "Nothing was changed: the form below says why.")
    schedule = Node.objects.with_schedule(now).get(pk=node.pk).schedule_state()
    schedule_by = schedule["by"] and User.objects.filter(pk=schedule["by"]).first()
    context = {
        **site.each_context(request),
        "title": f"Node {node.name or node.email}",
        "node": node,
        "heartbeat_age": round((now - node.last_seen).total_seconds()) if node.last_seen else None,
        "liveness_label": Liveness(node.liveness).label,
        "labels": sorted(node.labels.items()),
        "schedule": schedule,
        "schedule_by": schedule_by and (schedule_by.name or schedule_by.email),
        "current_window": MaintenanceWindow.objects.current(now).filter(node=node).first(),
        "next_windows": MaintenanceWindow.objects.coming(now).filter(node=node)[:5],
        "events": NodeEvent.objects.filter(node=node).select_related("actor")[:EVENT_ROWS],
        "scheduling_forms": [
            ("tm-cordon", "cordon", scheduling["cordon_form"], "Cordon"),
            ("tm-drain", "drain", scheduling["drain_form"], "Drain…"),
            # Only for a node there is something to end on (a cordon, a drain, a window).
            *(
                [("tm-uncordon", "uncordon", scheduling["uncordon_form"], "Uncordon")]
                if schedule["state"] != NodeState.SCHEDULABLE
                else []
            ),
            ("tm-maintenance", "maintenance", scheduling["maintenance_form"], "Plan maintenance"),
        ],
        "as_of": now,
        **work,
    }
    return TemplateResponse(request, "admin/nodes/node.html", context)


def scheduling_forms(site, request, node) -> dict | HttpResponse:
    """The cordon, drain, uncordon and maintenance forms, or the answer to a POST of
    one: a drain shows a confirmation page first (its pending work moves at once)."""
    action = request.POST.get("action") if request.method == "POST" else None
    forms = {
        "cordon_form": ReasonForm(request.POST if action == "cordon" else None, prefix="cordon"),
        "drain_form": DrainForm(request.POST if action == "drain" else None, prefix="drain"),
        "uncordon_form": UncordonForm(
            request.POST if action == "uncordon" else None, prefix="uncordon"
        ),
        "maintenance_form": MaintenanceForm(
            request.POST if action == "maintenance" else None, prefix="maintenance"
        ),
    }
    back = redirect("admin:node", node_id=node.pk)
    actor = request.user
    if action == "cordon" and forms["cordon_form"].is_valid():
        node_cordon(
            node_id=node.pk, reason=forms["cordon_form"].cleaned_data["reason"], actor=actor
        )
        # A cordon keeps a drain under way (node_cordon): say so, or it reads as ended.
        deadline = node_state(node.pk)["drainDeadline"]
        still = (
            f"; it is still draining, until {moment(deadline, 'minutes')} (uncordon ends both)"
            if deadline
            else ""
        )
        messages.success(request, f"Cordoned {node}: it takes no new tasks{still}.")
        return back
    if action == "drain" and forms["drain_form"].is_valid():
        data = forms["drain_form"].cleaned_data
        if "confirm" not in request.POST:
            return drain_confirmation(site, request, node, forms["drain_form"])
        node_drain(node_id=node.pk, reason=data["reason"], actor=actor, deadline=data["deadline"])
        moved, stayed = node_work().drain(node.pk, timezone.now())
        messages.success(
            request,
            f"Draining {node}: moved {moved} pending task(s) to other nodes; {stayed} had "
            f"nowhere to go and stay.",
        )
        return back
    if action == "uncordon" and forms["uncordon_form"].is_valid():
        try:
            reason = forms["uncordon_form"].cleaned_data["reason"]
            node_uncordon(node_id=node.pk, reason=reason, actor=actor)
        except NotCordoned as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"{node} is schedulable again.")
        return back
    if action == "maintenance" and forms["maintenance_form"].is_valid():
        node_maintenance_schedule(
            node_id=node.pk, actor=actor, **forms["maintenance_form"].cleaned_data
        )
        messages.success(request, "Maintenance window planned.")
        return back
    if action == "cancel_window":
        window = coming_window(node, request.POST.get("window", ""))
        if window is None:
            messages.error(request, NOT_COMING)
            return back
        if request.POST.get("confirm") != "yes":
            return window_cancel_confirmation(site, request, node, window)
        try:
            node_maintenance_cancel(node_id=node.pk, window_id=window.pk, actor=actor)
        except (MaintenanceWindow.DoesNotExist, WindowNotComing):  # gone, or begun, meanwhile
            messages.error(request, NOT_COMING)
        else:
            messages.success(request, f"Cancelled the maintenance window {window_span(window)}.")
        return back
    return forms


def coming_window(node, window_id: str) -> MaintenanceWindow | None:
    """The node's coming window by the id a form posted; None for any other."""
    if not window_id.isdigit():
        return None
    windows = MaintenanceWindow.objects.coming(timezone.now()).filter(node=node)
    return windows.filter(pk=int(window_id)).first()


def window_span(window) -> str:
    return f"from {moment(window.starts_at, 'minutes')} to {moment(window.ends_at, 'minutes')}"


def window_cancel_confirmation(site, request, node, window):
    """What cancelling a coming window undoes: the cordon (or drain) it would bring."""
    starts = moment(window.starts_at, "minutes")
    if window.drain:
        undone = (
            f"{node} is not drained at {starts}: its tasks in progress are not failed nor its "
            "pending tasks moved then, and it keeps taking new tasks through the window."
        )
    else:
        undone = f"{node} is not cordoned during it: it keeps taking new tasks."
    return confirmation(
        site,
        request,
        node,
        title=f"Cancel the maintenance window of {node}?",
        changes=[
            f"The window {window_span(window)} ({window.reason}) is deleted.",
            undone,
            f"Placement stops weighing it: {node} was given a task due after {starts} only "
            "when every other matching node also had a window before that deadline.",
            "The cancellation is a node event, with you as its author.",
        ],
        hidden=[("action", "cancel_window"), ("window", window.pk)],
        submit="Yes, cancel the window",
        destructive=True,
    )


def drain_confirmation(site, request, node, form):
    """How many of the node's tasks a drain moves now and how many may finish first."""
    now = timezone.now()
    in_progress = node_work().open_counts_by_node().get(node.pk, (0, 0))[1]
    movable, staying = node_work().drain_preview(node.pk, now)
    deadline = form.cleaned_data["deadline"] or drain_deadline_default(node.pk)
    deadline = moment(deadline, "minutes")
    return confirmation(
        site,
        request,
        node,
        title=f"Drain {node}?",
        changes=[
            pending_plan(movable, staying),
            f"Its {in_progress} task(s) in progress may finish until {deadline}; then the "
            "sweep fails them (cause: node drained) and moves them.",
            f"{node} takes no new tasks until uncordoned. The drain is a node event, with "
            "you as its author.",
        ],
        hidden=[
            ("action", "drain"),
            *((field.html_name, field.value() or "") for field in form),
        ],
        submit=f"Drain now: move {movable} pending task(s)" if movable else "Drain now",
        form_id="tm-drain-confirm",
    )


# Where a drain's pending tasks go, as placement sees the fleet now.
MOVE_RULE = "other alive, schedulable nodes that may run them (as failover places them)"
STAY_RULE = (
    "no other alive, schedulable node may run them, or they are pinned to it; they wait "
    "unclaimed, and the sweep tries again once the drain deadline has passed (or "
    "reassign them here)"
)


def pending_plan(movable: int, staying: int) -> str:
    """The confirmation's line on the node's pending tasks: how many move, how many stay."""
    if not movable and not staying:
        return "It has no pending task to move."
    if not staying:
        return f"Its {movable} pending task(s) move now to {MOVE_RULE}."
    if not movable:
        return f"Its {staying} pending task(s) stay on it: {STAY_RULE}."
    return (
        f"Of its {movable + staying} pending task(s), {movable} move now to {MOVE_RULE}; "
        f"{staying} stay on it: {STAY_RULE}."
    )


def deactivated_work(open_tasks: int, in_progress: int) -> str:
    """What becomes of a deactivated node's open tasks: its beats are refused, so with
    FAILOVER=reassign the sweep moves them once it is down (a node never seen is never
    down); otherwise they wait for an admin."""
    stay = f"Its {open_tasks} open task(s) ({in_progress} in progress) stay assigned to it"
    if settings.FAILOVER == "reassign":
        return (
            f"{stay} until reassigned, or until failover moves them to alive nodes once it "
            f"is down ({settings.NODE_DOWN_AFTER} s after its last heartbeat; never, if it "
            "has never sent one)."
        )
    return f"{stay} until reassigned: nothing works on them meanwhile."


def deactivate(site, request, node):
    """Asks first (Django's delete-confirmation pattern), then deactivates."""
    if request.POST.get("confirm") != "yes":
        open_tasks, in_progress = node_work().open_counts_by_node().get(node.pk, (0, 0))
        return confirmation(
            site,
            request,
            node,
            title=f"Deactivate {node}?",
            changes=[
                f"{node} can no longer log in, and every token it holds stops working at once.",
                deactivated_work(open_tasks, in_progress),
            ],
            hidden=[("action", "deactivate")],
            submit="Yes, deactivate",
            destructive=True,
        )
    user_deactivate(user=node)
    messages.success(request, f"Deactivated {node}: it can no longer log in.")
    return redirect("admin:node", node_id=node.pk)


def confirmation(site, request, node, **page):
    """The page a node-wide action shows before it changes anything
    (taskmgmt.confirmation): under the node's page, and back to it."""
    url = reverse("admin:node", args=[node.pk])
    nodes = f"{reverse('admin:accounts_user_changelist')}?role__exact=node"
    crumbs = [(nodes, "Nodes"), (url, node.name or node.email)]
    return confirmation_page(site, request, crumbs=crumbs, back=url, **page)
