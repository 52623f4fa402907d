"""The contact form: the visitor's message is mailed to support (through mailsync)."""

from django.conf import settings
from django.core.mail import EmailMessage
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt  # an API endpoint in this example; a real form keeps CSRF protection
@require_POST
def contact(request: HttpRequest) -> HttpResponse:
    sender = request.POST.get("email", "")
    text = request.POST.get("message", "")
    if "@" not in sender or not text:
        return HttpResponseBadRequest("email and message are required")
    mail = EmailMessage(
        subject=f"Contact form: {request.POST.get('subject', '(no subject)')}",
        body=text,
        to=[settings.SUPPORT_ADDRESS],
        reply_to=[sender],
        # Ask for a delivery report should support's mailbox refuse it.
        headers={"X-Mailsync-Notify": "failure,delay"},
    )
    sent = mail.send()
    return JsonResponse({"sent": sent})
