"""The example's one page: the contact form."""

from django.urls import path

from inbox import views

urlpatterns = [path("contact/", views.contact, name="contact")]
