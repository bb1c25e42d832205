/* The campaign builder of the console (campaigns.admin_campaigns.CampaignAdmin).
 *
 * Django's change form does the saving; this script only shows what applies:
 * - the variants' template fields of the chosen channel (fieldsets
 *   .channel-fields.channel-<channel>, also the in-app fieldset), new variants
 *   included ("formset:added");
 * - the schedule fields of the chosen kind (SCHEDULE_FIELDS);
 * - the chosen project's segments only (options carry data-project; the form
 *   refuses another project's segment anyway);
 * - the audience's live count, from the audience view (data-audience-url);
 * - the A/B rule in words as its fields stand, from the rule view
 *   (data-ab-rule-url: the server's one wording, campaigns.results.decision).
 * A static file: the console's Content-Security-Policy runs no inline script.
 */
(function () {
  "use strict";

  var SCHEDULE_FIELDS = {
    now: ["cutoff_minutes"],
    at: ["send_date", "send_time", "schedule_timezone", "past_time_policy", "cutoff_minutes"],
    recurring: ["recurrence", "send_time", "weekdays", "cutoff_minutes"],
    triggered: ["trigger_event", "trigger_delay_seconds", "cancel_event", "cutoff_minutes"]
  };
  var ALL_SCHEDULE = ["send_date", "send_time", "schedule_timezone", "past_time_policy", "recurrence",
    "weekdays", "trigger_event", "trigger_delay_seconds", "cancel_event", "cutoff_minutes"];

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }

  function value(id) {
    var el = document.getElementById(id);
    return el ? el.value : null;
  }

  function rows(name) {
    return document.querySelectorAll(".form-row.field-" + name + ", .fieldBox.field-" + name);
  }

  function start() {
    var root = document.getElementById("campaign-builder");
    if (!root) {
      return;
    }
    var channelBox = document.getElementById("id_channel");
    var kindBox = document.getElementById("id_schedule_kind");
    var projectBox = document.getElementById("id_project");
    var segmentBox = document.getElementById("id_segment");
    var marketingBox = document.getElementById("id_marketing");
    // Read-only pages (a started campaign) carry no inputs: the channel is in the page as text.
    var readOnlyChannel = root.dataset.channel || "";

    function channel() {
      return channelBox ? channelBox.value : readOnlyChannel;
    }

    function showChannel() {
      var chosen = channel();
      document.querySelectorAll("fieldset.channel-fields").forEach(function (fs) {
        fs.hidden = !!chosen && !fs.classList.contains("channel-" + chosen);
      });
    }

    function showSchedule() {
      if (!kindBox) {
        return;
      }
      var shown = SCHEDULE_FIELDS[kindBox.value] || ALL_SCHEDULE;
      ALL_SCHEDULE.forEach(function (name) {
        rows(name).forEach(function (row) { row.hidden = shown.indexOf(name) < 0; });
      });
      var weekly = value("id_recurrence") === "weekly";
      if (kindBox.value === "recurring" && !weekly) {
        rows("weekdays").forEach(function (row) { row.hidden = true; });
      }
      if (kindBox.value === "at" && value("id_schedule_timezone") !== "user") {
        rows("past_time_policy").forEach(function (row) { row.hidden = true; });
      }
    }

    function project() {
      if (projectBox) {
        return projectBox.value;
      }
      return root.dataset.project || "";
    }

    function filterSegments() {
      if (!segmentBox) {
        return;
      }
      var chosen = project();
      Array.prototype.forEach.call(segmentBox.options, function (option) {
        if (!option.dataset.project) {
          return; // "everyone reachable"
        }
        var other = !chosen || option.dataset.project !== chosen;
        option.hidden = other;
        option.disabled = other;
        if (other && option.selected) {
          segmentBox.value = "";
        }
      });
    }

    var countBox = null;
    var pending = 0;
    function showCount() {
      if (!segmentBox || !root.dataset.audienceUrl) {
        return;
      }
      if (!countBox) {
        countBox = document.createElement("span");
        countBox.id = "campaign-audience-count";
        countBox.className = "audience-count";
        segmentBox.parentNode.insertBefore(countBox, segmentBox.nextSibling);
      }
      var chosen = project();
      if (!chosen || !channel()) {
        countBox.textContent = "";
        return;
      }
      var query = new URLSearchParams({
        project: chosen,
        channel: channel(),
        segment: segmentBox.value,
        marketing: marketingBox && !marketingBox.checked ? "0" : "1"
      });
      var ticket = ++pending;
      countBox.textContent = "counting…";
      fetch(root.dataset.audienceUrl + "?" + query.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.json().then(function (body) { return [response.ok, body]; }); })
        .then(function (answer) {
          if (ticket !== pending) {
            return; // a newer choice is being counted
          }
          var ok = answer[0], body = answer[1];
          if (!ok) {
            countBox.textContent = Object.keys(body).map(function (k) { return k + ": " + body[k].join(", "); }).join("; ");
            return;
          }
          var text = body.count.toLocaleString("en") + " profiles";
          if (body.status && body.status !== "ready") {
            text += " (" + body.status + (body.status === "computing" ? " " + Math.round(body.progress * 100) + " %" : "") + ")";
          }
          countBox.textContent = text;
        })
        .catch(function () { countBox.textContent = ""; });
    }

    var AB_FIELDS = ["ab_test_percent", "ab_decision_hours", "ab_metric", "ab_confidence", "ab_min_sample",
      "ab_fallback"];

    function variantCount() {
      var n = 0;
      document.querySelectorAll('input[name^="variants-"][name$="-share"]').forEach(function (input) {
        var del = document.getElementsByName(input.name.replace(/-share$/, "-DELETE"))[0];
        if (input.name.indexOf("__prefix__") < 0 && !(del && del.checked)) {
          n += 1;
        }
      });
      return Math.max(n, 1);
    }

    function showRule() {
      var box = document.querySelector(".form-row.field-ab_rule .readonly");
      if (!box || !root.dataset.abRuleUrl || !document.getElementById("id_ab_test_percent")) {
        return;
      }
      var query = new URLSearchParams();
      AB_FIELDS.forEach(function (name) { query.set(name, value("id_" + name) || ""); });
      query.set("variants", String(variantCount()));
      fetch(root.dataset.abRuleUrl + "?" + query.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (body) {
          box.textContent = body.text || Object.keys(body).map(function (k) {
            return k + ": " + body[k].join(", ");
          }).join("; ");
        })
        .catch(function () { /* the saved rule stays shown */ });
    }

    AB_FIELDS.forEach(function (name) {
      var el = document.getElementById("id_" + name);
      if (el) {
        el.addEventListener("change", showRule);
      }
    });
    document.addEventListener("formset:added", showRule);
    document.addEventListener("formset:removed", showRule);

    if (channelBox) {
      channelBox.addEventListener("change", function () { showChannel(); showCount(); });
    }
    if (kindBox) {
      kindBox.addEventListener("change", showSchedule);
    }
    ["id_recurrence", "id_schedule_timezone"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) {
        el.addEventListener("change", showSchedule);
      }
    });
    if (projectBox) {
      projectBox.addEventListener("change", function () { filterSegments(); showCount(); });
    }
    if (segmentBox) {
      segmentBox.addEventListener("change", showCount);
    }
    if (marketingBox) {
      marketingBox.addEventListener("change", showCount);
    }
    document.addEventListener("formset:added", showChannel);
    showChannel();
    showSchedule();
    filterSegments();
    showCount();
    showRule();
  }
})();
