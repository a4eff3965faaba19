"""The page an admin action shows before it changes anything (Django's delete
confirmation pattern): what will happen, one button to do it, and the way back.

The node page's drain, deactivation and window cancel, and the task list's broadcast,
ask through it; the task list's actions have their own (they list the selected tasks)."""

from django.template.response import TemplateResponse


def confirmation_page(
    site,
    request,
    *,
    title: str,
    crumbs: list[tuple[str, str]],
    changes: list[str],
    hidden: list[tuple[str, object]],
    submit: str,
    back: str | None = None,
    intro: str = "",
    destructive: bool = False,
    form_id: str = "",
):
    """`hidden`: what the action's form posted, which its button posts again with
    confirm=yes. `back`: where "No, take me back" leads; None: it posts them again with
    `back` instead, and the action's form comes back filled in as it was sent.
    `crumbs`: (url, label) between Home and the title."""
    context = {
        **site.each_context(request),
        "title": title,
        "crumbs": crumbs,
        "intro": intro,
        "changes": changes,
        "hidden": hidden,
        "submit": submit,
        "back": back,
        "destructive": destructive,
        "form_id": form_id,
    }
    return TemplateResponse(request, "admin/taskmgmt/confirm.html", context)
