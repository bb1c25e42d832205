/* The segment rule-tree builder of the console (campaigns.admin.SegmentAdmin).
 *
 * The tree is kept as the rules JSON itself, in the hidden `rules` field: every
 * edit in the rows (or in the JSON view) is written back there, so the form
 * posts exactly what the builder shows. Fields, operators and value kinds come
 * from the catalogue the server puts on #segment-builder (data-catalogue,
 * campaigns/segments/catalogue.py, built from the grammar's own tables), so
 * they are written once. Condition kinds
 * the builder does not know are kept as raw JSON rows. A static file: the
 * console's Content-Security-Policy runs no inline script.
 */
(function () {
  "use strict";

  // The admin's Media puts this script in the page's head: start once the body is there.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }

  function start() {
    var root = document.getElementById("segment-builder");
    if (!root) {
      return;
    }
    var catalogue = JSON.parse(root.dataset.catalogue);
    var segments = JSON.parse(root.dataset.segments);
    var hidden = document.getElementById("id_rules");
    var treeBox = document.getElementById("builder-tree");
    var jsonBox = document.getElementById("builder-json");
    var jsonText = document.getElementById("builder-json-text");
    var jsonError = document.getElementById("builder-json-error");
    var CONDITION_KEYS = catalogue.conditions.map(function (c) { return c.key; });

    // --- the model: groups {mode, children}, conditions {data: raw JSON} ------

    function fromJson(node) {
      if (node && typeof node === "object" && !Array.isArray(node)) {
        if (Array.isArray(node.all)) {
          return { mode: "all", children: node.all.map(fromJson) };
        }
        if (Array.isArray(node.any)) {
          return { mode: "any", children: node.any.map(fromJson) };
        }
        if ("not" in node) {
          var inner = node.not;
          // "none of" is NOT(any of …); a single negated node is NOT(node).
          if (inner && Array.isArray(inner.any) && Object.keys(inner).length === 1) {
            return { mode: "not", children: inner.any.map(fromJson) };
          }
          return { mode: "not", children: [fromJson(inner)] };
        }
      }
      return { data: node };
    }

    function toJson(item) {
      if (!item.mode) {
        return item.data;
      }
      var children = item.children.map(toJson);
      if (item.mode === "not") {
        return { not: children.length === 1 ? children[0] : { any: children } };
      }
      var out = {};
      out[item.mode] = children;
      return out;
    }

    function initialModel() {
      var raw = hidden.value;
      var parsed = null;
      try {
        parsed = raw ? JSON.parse(raw) : null;
      } catch (e) {
        parsed = null;
      }
      if (!parsed || (typeof parsed === "object" && !Array.isArray(parsed) && Object.keys(parsed).length === 0)) {
        return { mode: "all", children: [] };
      }
      var model = fromJson(parsed);
      return model.mode ? model : { mode: "all", children: [model] };
    }

    var model = initialModel();

    function sync(fromJsonView) {
      var json = toJson(model);
      hidden.value = JSON.stringify(json);
      if (!fromJsonView) {
        jsonText.value = JSON.stringify(json, null, 2);
      }
    }

    // --- small DOM helpers -------------------------------------------------------

    function el(tag, className, text) {
      var node = document.createElement(tag);
      if (className) {
        node.className = className;
      }
      if (text !== undefined) {
        node.textContent = text;
      }
      return node;
    }

    function select(className, options, value, onChange) {
      var s = el("select", className);
      options.forEach(function (o) {
        var opt = el("option", "", o.label);
        opt.value = o.value;
        s.appendChild(opt);
      });
      s.value = value === undefined || value === null ? "" : String(value);
      s.addEventListener("change", function () { onChange(s.value); });
      return s;
    }

    function input(className, type, value, onInput, placeholder) {
      var i = el("input", className);
      i.type = type;
      i.value = value === undefined || value === null ? "" : String(value);
      if (placeholder) {
        i.placeholder = placeholder;
      }
      i.addEventListener("input", function () { onInput(i.value); sync(); });
      return i;
    }

    function button(className, text, onClick) {
      var b = el("button", "button " + className, text);
      b.type = "button";
      b.addEventListener("click", function () { onClick(); render(); });
      return b;
    }

    function number(raw) {
      var n = Number(raw);
      return raw === "" || isNaN(n) ? raw : n;
    }

    // --- values by kind (catalogue "value") ---------------------------------------

    function emptyValue(kind) {
      switch (kind) {
        case "none": return undefined;
        case "list": case "list_number": return [];
        case "pair": case "pair_number": case "pair_datetime": return ["", ""];
        case "days": return { days: 7 };
        case "boolean": return true;
        case "number": return 0;
        default: return "";
      }
    }

    // Inputs for `holder[key]` of value kind `kind`.
    function valueInputs(holder, key, kind) {
      var box = el("span", "builder-value");
      var v = holder[key];
      if (kind === "none") {
        return box;
      }
      if (kind === "list" || kind === "list_number") {
        box.appendChild(input("builder-value-list", "text", Array.isArray(v) ? v.join(", ") : v, function (raw) {
          var parts = raw.split(",").map(function (p) { return p.trim(); }).filter(function (p) { return p !== ""; });
          holder[key] = kind === "list_number" ? parts.map(number) : parts;
        }, "a, b, c"));
        return box;
      }
      if (kind === "pair" || kind === "pair_number" || kind === "pair_datetime") {
        var pair = Array.isArray(v) && v.length === 2 ? v : ["", ""];
        holder[key] = pair;
        [0, 1].forEach(function (i) {
          if (i === 1) {
            box.appendChild(el("span", "", " and "));
          }
          box.appendChild(input("builder-value-" + i, kind === "pair_number" ? "number" : "text", pair[i], function (raw) {
            pair[i] = kind === "pair_number" ? number(raw) : raw;
          }, kind === "pair_datetime" ? "YYYY-MM-DD" : ""));
        });
        return box;
      }
      if (kind === "days") {
        var days = v && typeof v === "object" ? v : { days: 7 };
        holder[key] = days;
        box.appendChild(input("builder-value-days", "number", days.days, function (raw) { days.days = number(raw); }));
        box.appendChild(el("span", "", " days"));
        return box;
      }
      if (kind === "boolean") {
        box.appendChild(select("builder-value-bool", [{ value: "true", label: "yes" }, { value: "false", label: "no" }],
          String(v !== false), function (raw) { holder[key] = raw === "true"; sync(); }));
        return box;
      }
      if (kind === "number") {
        box.appendChild(input("builder-value-number", "number", v, function (raw) { holder[key] = number(raw); }));
        return box;
      }
      box.appendChild(input("builder-value-text", "text", v, function (raw) { holder[key] = raw; },
        kind === "datetime" ? "YYYY-MM-DD or ISO time" : ""));
      return box;
    }

    function opsOf(type) {
      return catalogue.operators[type] || catalogue.operators[catalogue.property_type];
    }

    function opSpec(type, op) {
      var ops = opsOf(type);
      for (var i = 0; i < ops.length; i++) {
        if (ops[i].op === op) {
          return ops[i];
        }
      }
      return null;
    }

    // An operator select and its value for `holder` (keys op / value) over `type`.
    function opAndValue(row, holder, type) {
      var ops = opsOf(type);
      if (!opSpec(type, holder.op)) {
        holder.op = ops[0].op;
        holder.value = emptyValue(ops[0].value);
      }
      row.appendChild(select("builder-op", ops.map(function (o) { return { value: o.op, label: o.label }; }), holder.op,
        function (op) {
          var before = opSpec(type, holder.op);
          var after = opSpec(type, op);
          holder.op = op;
          if (!before || before.value !== after.value) {
            holder.value = emptyValue(after.value);
          }
          if (holder.value === undefined) {
            delete holder.value;
          }
          render();
        }));
      var spec = opSpec(type, holder.op);
      row.appendChild(valueInputs(holder, "value", spec.value));
      if (holder.value === undefined) {
        delete holder.value;
      }
    }

    // --- condition rows, by kind ----------------------------------------------------

    function newCondition(kind) {
      switch (kind) {
        case "device": return { device: [{ field: "platform", op: "eq", value: "ios" }] };
        case "event": return { event: "", count: { op: "gte", value: 1 }, window: "ever" };
        case "recent_item": return { recent_item: "viewed", product: "" };
        case "segment": return { segment: segments.length ? segments[0].id : null, member: true };
        case "bucket": return { bucket: { op: "between", value: [0, 99] } };
        default: return { profile: "country", op: "eq", value: "" };
      }
    }

    function kindOf(data) {
      if (data && typeof data === "object" && !Array.isArray(data)) {
        for (var i = 0; i < CONDITION_KEYS.length; i++) {
          if (CONDITION_KEYS[i] in data) {
            return CONDITION_KEYS[i];
          }
        }
      }
      return "raw";
    }

    function fieldSpec(fields, name) {
      for (var i = 0; i < fields.length; i++) {
        var f = fields[i];
        if (f.keyed ? String(name).indexOf(f.field) === 0 : f.field === name) {
          return f;
        }
      }
      return null;
    }

    function profileRow(row, data) {
      var fields = catalogue.profile_fields;
      var spec = fieldSpec(fields, data.profile) || fields[0];
      row.appendChild(select("builder-field", fields.map(function (f) { return { value: f.field, label: f.label }; }),
        spec.field, function (name) {
          var before = fieldSpec(fields, data.profile);
          var after = fieldSpec(fields, name);
          data.profile = name;
          if (!before || before.type !== after.type) {
            delete data.op;
          }
          render();
        }));
      if (spec.keyed) {
        row.appendChild(input("builder-trait", "text", String(data.profile).slice(spec.field.length), function (raw) {
          data.profile = spec.field + raw;
        }, "trait name"));
      }
      opAndValue(row, data, spec.type);
    }

    function deviceRow(row, data) {
      var fields = catalogue.device_fields;
      if (!Array.isArray(data.device)) {
        data.device = [];
      }
      row.appendChild(el("span", "", "a device where"));
      var sub = el("div", "builder-sub");
      data.device.forEach(function (clause, index) {
        var line = el("div", "builder-row builder-device-clause");
        var spec = fieldSpec(fields, clause.field) || fields[0];
        clause.field = spec.field;
        line.appendChild(select("builder-field", fields.map(function (f) { return { value: f.field, label: f.label }; }),
          spec.field, function (name) { clause.field = name; delete clause.op; render(); }));
        opAndValue(line, clause, spec.type);
        line.appendChild(button("builder-remove", "×", function () { data.device.splice(index, 1); }));
        sub.appendChild(line);
      });
      sub.appendChild(button("builder-add-clause", "+ and", function () {
        data.device.push({ field: "platform", op: "eq", value: "ios" });
      }));
      row.appendChild(sub);
    }

    function windowInputs(row, data) {
      var w = data.window === undefined ? "ever" : data.window;
      var kind = w === "ever" ? "ever" : (w && "between" in w ? "between" : "last_days");
      row.appendChild(select("builder-window", catalogue.event.windows.map(function (o) {
        return { value: o.key, label: o.label };
      }), kind, function (k) {
        data.window = k === "ever" ? "ever" : (k === "between" ? { between: ["", ""] } : { last_days: 7 });
        render();
      }));
      if (kind === "last_days") {
        row.appendChild(input("builder-window-days", "number", w.last_days, function (raw) { w.last_days = number(raw); }));
      } else if (kind === "between") {
        row.appendChild(valueInputs(w, "between", "pair_datetime"));
      }
    }

    function eventRow(row, data) {
      row.appendChild(select("builder-did", [{ value: "true", label: "did" }, { value: "false", label: "did not do" }],
        String(data.did !== false), function (raw) {
          if (raw === "false") {
            data.did = false;
            delete data.count;
          } else {
            delete data.did;
            data.count = { op: "gte", value: 1 };
          }
          render();
        }));
      row.appendChild(input("builder-event-name", "text", data.event, function (raw) { data.event = raw; }, "event name"));
      if (data.did !== false) {
        var count = data.count || (data.count = { op: "gte", value: 1 });
        row.appendChild(select("builder-count-op", catalogue.operators.count.map(function (o) {
          return { value: o.op, label: o.label };
        }), count.op, function (op) { count.op = op; sync(); }));
        row.appendChild(input("builder-count", "number", count.value, function (raw) { count.value = number(raw); }));
        row.appendChild(el("span", "", "times"));
      }
      windowInputs(row, data);

      var sub = el("div", "builder-sub");
      (data.where || []).forEach(function (clause, index) {
        var line = el("div", "builder-row builder-where");
        line.appendChild(el("span", "", "where property"));
        line.appendChild(input("builder-property", "text", clause.property, function (raw) { clause.property = raw; }));
        opAndValue(line, clause, catalogue.property_type);
        line.appendChild(button("builder-remove", "×", function () {
          data.where.splice(index, 1);
          if (!data.where.length) {
            delete data.where;
          }
        }));
        sub.appendChild(line);
      });
      if (data.aggregate) {
        var agg = data.aggregate;
        var line = el("div", "builder-row builder-aggregate");
        line.appendChild(el("span", "", "and the"));
        line.appendChild(select("builder-agg-fn", catalogue.event.aggregate_functions.map(function (f) {
          return { value: f, label: f };
        }), agg.fn, function (fn) { agg.fn = fn; sync(); }));
        line.appendChild(el("span", "", "of property"));
        line.appendChild(input("builder-agg-property", "text", agg.property, function (raw) { agg.property = raw; }));
        opAndValue(line, agg, "aggregate");
        line.appendChild(button("builder-remove", "×", function () { delete data.aggregate; }));
        sub.appendChild(line);
      }
      catalogue.event.first_last.forEach(function (fl) {
        if (!data[fl.key]) {
          return;
        }
        var line = el("div", "builder-row builder-" + fl.key);
        line.appendChild(el("span", "", "and the " + fl.label + " was"));
        opAndValue(line, data[fl.key], "event_time");
        line.appendChild(button("builder-remove", "×", function () { delete data[fl.key]; }));
        sub.appendChild(line);
      });
      var tools = el("div", "builder-row");
      tools.appendChild(button("builder-add-where", "+ property condition", function () {
        (data.where || (data.where = [])).push({ property: "", op: "eq", value: "" });
      }));
      if (!data.aggregate) {
        tools.appendChild(button("builder-add-aggregate", "+ sum / average", function () {
          data.aggregate = { fn: "sum", property: "", op: "gt", value: 0 };
        }));
      }
      catalogue.event.first_last.forEach(function (fl) {
        if (!data[fl.key]) {
          tools.appendChild(button("builder-add-" + fl.key, "+ " + fl.label, function () {
            data[fl.key] = { op: "within_last", value: { days: 7 } };
          }));
        }
      });
      sub.appendChild(tools);
      row.appendChild(sub);
    }

    function recentItemRow(row, data) {
      var items = catalogue.recent_items;
      row.appendChild(select("builder-recent-list", items.lists.map(function (o) {
        return { value: o.key, label: o.label };
      }), data.recent_item, function (v) { data.recent_item = v; sync(); }));
      var target = "category" in data ? "category" : "product";
      row.appendChild(select("builder-recent-target", items.targets.map(function (o) {
        return { value: o.key, label: o.label };
      }), target, function (t) {
        var value = data[target];
        delete data[target];
        data[t] = value;
        render();
      }));
      row.appendChild(input("builder-value-text", "text", data[target], function (raw) { data[target] = raw; }));
    }

    function segmentRow(row, data) {
      row.appendChild(select("builder-member", [{ value: "true", label: "is in" }, { value: "false", label: "is not in" }],
        String(data.member !== false), function (raw) { data.member = raw === "true"; sync(); }));
      var project = currentProject();
      var options = segments.filter(function (s) { return !project || String(s.project_id) === project; })
        .map(function (s) { return { value: s.id, label: s.name }; });
      if (!options.some(function (o) { return String(o.value) === String(data.segment); })) {
        options.unshift({ value: data.segment === null ? "" : data.segment, label: "segment #" + data.segment });
      }
      row.appendChild(select("builder-segment", options, data.segment, function (v) { data.segment = number(v); sync(); }));
    }

    function bucketRow(row, data) {
      var bucket = data.bucket && typeof data.bucket === "object" ? data.bucket : (data.bucket = { op: "between", value: [0, 99] });
      row.appendChild(el("span", "", "bucket (" + catalogue.bucket.min + "–" + catalogue.bucket.max + ")"));
      opAndValue(row, bucket, "bucket");
    }

    function rawRow(row, item) {
      var area = el("textarea", "builder-raw");
      area.rows = 3;
      area.value = JSON.stringify(item.data);
      area.addEventListener("input", function () {
        try {
          item.data = JSON.parse(area.value);
          area.classList.remove("errors");
          sync();
        } catch (e) {
          area.classList.add("errors");
        }
      });
      row.appendChild(area);
    }

    var ROWS = {
      profile: profileRow,
      device: deviceRow,
      event: eventRow,
      recent_item: recentItemRow,
      segment: segmentRow,
      bucket: bucketRow,
    };

    function conditionRow(item, parent, index) {
      var row = el("div", "builder-row builder-condition");
      var kind = kindOf(item.data);
      var kinds = catalogue.conditions.map(function (c) { return { value: c.key, label: c.label }; });
      if (kind === "raw") {
        kinds.push({ value: "raw", label: "JSON" });
      }
      row.appendChild(select("builder-kind", kinds, kind, function (k) { item.data = newCondition(k); render(); }));
      if (kind === "raw") {
        rawRow(row, item);
      } else {
        ROWS[kind](row, item.data);
      }
      row.appendChild(button("builder-remove", "×", function () { parent.children.splice(index, 1); }));
      return row;
    }

    function groupBox(group, parent, index) {
      var box = el("div", "builder-group");
      var head = el("div", "builder-row builder-group-head");
      head.appendChild(el("span", "", "Profiles matching"));
      head.appendChild(select("builder-mode", catalogue.groups.map(function (g) {
        return { value: g.key, label: g.label };
      }), group.mode, function (mode) { group.mode = mode; sync(); }));
      if (parent) {
        head.appendChild(button("builder-remove", "×", function () { parent.children.splice(index, 1); }));
      }
      box.appendChild(head);
      group.children.forEach(function (child, i) {
        box.appendChild(child.mode ? groupBox(child, group, i) : conditionRow(child, group, i));
      });
      var tools = el("div", "builder-row");
      tools.appendChild(button("builder-add-condition", "+ condition", function () {
        group.children.push({ data: newCondition("profile") });
      }));
      tools.appendChild(button("builder-add-group", "+ group", function () {
        group.children.push({ mode: "any", children: [] });
      }));
      box.appendChild(tools);
      return box;
    }

    function render() {
      treeBox.replaceChildren(groupBox(model, null, 0));
      sync();
    }

    // --- the JSON view ----------------------------------------------------------------

    document.getElementById("builder-json-toggle").addEventListener("click", function () {
      jsonBox.classList.toggle("hidden");
    });
    jsonText.addEventListener("input", function () {
      try {
        var parsed = JSON.parse(jsonText.value);
        var next = fromJson(parsed);
        model = next.mode ? next : { mode: "all", children: [next] };
        jsonError.classList.add("hidden");
        treeBox.replaceChildren(groupBox(model, null, 0));
        sync(true);
      } catch (e) {
        jsonError.textContent = "Not valid JSON: " + e.message;
        jsonError.classList.remove("hidden");
      }
    });

    // --- preview ---------------------------------------------------------------------------

    function currentProject() {
      var choice = document.getElementById("id_project");
      return choice && choice.value ? choice.value : String(root.dataset.project || "");
    }

    function csrfToken() {
      var field = document.querySelector("input[name=csrfmiddlewaretoken]");
      return field ? field.value : "";
    }

    function showPreview(status, body) {
      var box = document.getElementById("builder-preview-result");
      var errors = document.getElementById("preview-errors");
      var figures = document.getElementById("preview-figures");
      box.classList.remove("hidden");
      if (status !== 200) {
        var lines = [];
        Object.keys(body || {}).forEach(function (k) {
          [].concat(body[k]).forEach(function (m) { lines.push(m); });
        });
        errors.textContent = lines.join("\n") || "The preview failed (" + status + ").";
        errors.classList.remove("hidden");
        figures.classList.add("hidden");
        return;
      }
      errors.classList.add("hidden");
      figures.classList.remove("hidden");
      document.getElementById("preview-count").textContent = String(body.count);
      ["email", "push", "sms"].forEach(function (c) {
        document.getElementById("preview-" + c).textContent = String(body.reachable[c]);
      });
      var tbody = document.querySelector("#preview-sample tbody");
      tbody.replaceChildren();
      body.sample.forEach(function (p) {
        var tr = el("tr", "preview-profile");
        tr.appendChild(el("td", "", p.user_id || "#" + p.profile_id));
        tr.appendChild(el("td", "", p.email));
        var td = el("td");
        var list = el("ul", "preview-conditions");
        p.conditions.forEach(function (c) {
          list.appendChild(el("li", c.met ? "met" : "not-met", (c.met ? "✓ " : "✗ ") + c.label));
        });
        td.appendChild(list);
        tr.appendChild(td);
        tbody.appendChild(tr);
      });
    }

    document.getElementById("builder-preview").addEventListener("click", function () {
      sync();
      fetch(root.dataset.previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ project: currentProject(), rules: toJson(model) }),
      }).then(function (response) {
        return response.json().then(function (body) { showPreview(response.status, body); },
          function () { showPreview(response.status, null); });
      });
    });

    var projectChoice = document.getElementById("id_project");
    if (projectChoice) {
      projectChoice.addEventListener("change", render);  // the segment choices follow the project
    }
    render();
  }
})();
