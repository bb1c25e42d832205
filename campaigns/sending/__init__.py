"""Campaign sending: who gets which variant, what it says, and when it goes out.

One module per job; the delivery service (delivery/) sends what this package
hands it and knows nothing of campaigns:

- assignment.py: the stable assignment of a profile to the system control
  group, the campaign's control group or a variant (a hash of (campaign,
  profile); the same formula in Python and in SQL, campaigns.segments.buckets).
- context.py: the Liquid context of a chunk of profiles, built in bulk: `user`,
  `recommendations` (the serving code's, with the API's filters), `trending`,
  `product`, `event`, `unsubscribe_url`.
- render.py: a variant's channel templates rendered for one profile into the
  delivery service's message content; a rendering error is the message's
  `template_error` skip, never the chunk's failure.
- fanout.py: a run walks its audience in profile-id ranges, one task per chunk
  on the `sends` queue; each chunk assigns, renders and enqueues (one
  delivery.services.messages_enqueue call), so memory is flat in the audience.
- schedule.py: when a campaign's runs happen (now, at a local time in the
  project's or each user's time zone, recurring as django-celery-beat entries).
- triggers.py: triggered campaigns, from the ingest workers' stored-events hook,
  with a delay and a cancelling event.
- lifecycle.py: validate, start, pause, cancel.
- estimate.py: the preview of a variant for one profile and the estimate of a
  send before it starts.
"""
