"""The node page in the admin site (admin/node/<id>/, routed by tasks.admin_site):
the node's liveness and its deactivation here, its work's panels and reassign
from nodes.work."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.services import user_deactivate
from nodes import heartbeats
from nodes.models import Liveness, Node
from nodes.work import node_work


def node_view(site, request, node_id):
    heartbeats.flush()
    now = timezone.now()
    node = Node.objects.with_liveness(now).filter(pk=node_id).first()
    if node is None:
        raise Http404("No node has this id.")
    if request.method == "POST" and request.POST.get("action") == "deactivate":
        return deactivate(site, request, node)
    work = node_work().node_page(request, node, now)
    if isinstance(work, HttpResponse):
        return work
    context = {
        **site.each_context(request),
        "title": f"Node {node.name or node.email}",
        "node": node,
        "heartbeat_age": round((now - node.last_seen).total_seconds()) if node.last_seen else None,
        "liveness_label": Liveness(node.liveness).label,
        "as_of": now,
        **work,
    }
    return TemplateResponse(request, "admin/nodes/node.html", context)


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
                f"Its {open_tasks} open task(s) ({in_progress} in progress) stay assigned to it "
                "until reassigned: nothing works on them meanwhile.",
            ],
            hidden=[("action", "deactivate")],
            submit="Yes, deactivate",
            destructive=True,
        )
    user_deactivate(user=node)
    messages.success(request, f"Deactivated {node}: it can no longer log in.")
    return redirect("admin:node", node_id=node.pk)


def confirmation(site, request, node, *, title, changes, hidden, submit, destructive=False):
    """The page a node-wide action shows before it changes anything; its form posts
    `hidden` again with confirm=yes."""
    context = {
        **site.each_context(request),
        "title": title,
        "node": node,
        "changes": changes,
        "hidden": hidden,
        "submit": submit,
        "destructive": destructive,
    }
    return TemplateResponse(request, "admin/nodes/confirm.html", context)
