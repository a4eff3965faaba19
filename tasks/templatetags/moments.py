"""The `moment` filter: taskmgmt.moments, the admin's one way to write a moment."""

from django import template

from taskmgmt.moments import moment

register = template.Library()
register.filter("moment", moment)
