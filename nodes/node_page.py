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
        user_deactivate(user=node)
        messages.success(request, f"Deactivated {node}: it can no longer log in.")
        return redirect("admin:node", node_id=node.pk)
    work = node_work().node_page(request, node, now)
    if isinstance(work, HttpResponse):
        return work
    context = {
        **site.each_context(request),
        "title": f"Node {node.name or node.email}",
        "node": node,
        "heartbeat_age": round((now - node.last_seen).total_seconds()) if node.last_seen else None,
        "liveness_label": Liveness(node.liveness).label,
        "labels": sorted(node.labels.items()),
        **work,
    }
    return TemplateResponse(request, "admin/nodes/node.html", context)
