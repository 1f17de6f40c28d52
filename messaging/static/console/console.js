/* Staff console behaviour: plain JavaScript, no build step. Every page works without it; this adds
   live checks while typing, recipient search and counts, and the self-updating campaign progress. */
(function () {
  "use strict";

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      var args = arguments;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(null, args); }, ms);
    };
  }

  // "%(name)s" placeholders, as Django's translated strings use them.
  function format(text, values) {
    return text.replace(/%\((\w+)\)s/g, function (_, key) { return String(values[key]); });
  }

  function strings() {
    var node = document.getElementById("console-strings");
    return node ? JSON.parse(node.textContent) : {};
  }

  function csrfToken(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function postJSON(url, form, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(form) },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    });
  }

  function fillList(list, items) {
    list.textContent = "";
    (items || []).forEach(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    });
  }

  // Characters as WeChat and the server count them: code points, so "𠀀" or "中" is one.
  function charCount(value) { return Array.from(value).length; }

  /* Step 1: choosing an account or a template reloads the page with it. */
  function initPicker() {
    var form = document.getElementById("pick-form");
    if (!form) { return; }
    form.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () {
        var template = form.querySelector("select[name=template]");
        if (select.name === "account" && template) { template.value = ""; }
        form.submit();
      });
    });
  }

  /* Step 2: one template's keyword fields, with counters and the server's verdict as people type. */
  function initKeywordSet(form, set, text) {
    var touched = {};
    var inputs = Array.prototype.slice.call(set.querySelectorAll("input[data-keyword]"));

    function updateCounter(input) {
      var counter = set.querySelector('[data-counter="' + input.dataset.keyword + '"]');
      var limit = input.dataset.maxLength ? parseInt(input.dataset.maxLength, 10) : null;
      var count = charCount(input.value);
      counter.textContent = limit ? format(text.counter, { count: count, limit: limit })
                                  : format(text.counter_unlimited, { count: count });
      counter.classList.toggle("over", limit !== null && count > limit);
    }

    function showResult(result) {
      inputs.forEach(function (input) {
        var name = input.dataset.keyword;
        var errors = touched[name] ? (result.errors[name] || []) : [];
        var warnings = touched[name] ? (result.warnings[name] || []) : [];
        fillList(set.querySelector('[data-errors="' + name + '"]'), errors);
        fillList(set.querySelector('[data-warnings="' + name + '"]'), warnings);
        input.setAttribute("aria-invalid", errors.length ? "true" : "false");
        input.closest(".keyword").classList.toggle("invalid", errors.length > 0);
      });
    }

    var validate = debounce(function () {
      var data = {};
      inputs.forEach(function (input) { data[input.dataset.keyword] = input.value; });
      var body = { account: form.dataset.account, data: data };
      if (set.dataset.keywordSet === "subscription") {
        body.subscription = set.dataset.templatePk;
      } else {
        body.template = set.dataset.templatePk;
      }
      postJSON(form.dataset.validateUrl, form, body)
        .then(showResult).catch(function () { /* the server checks again on Send */ });
    }, 300);

    inputs.forEach(function (input) {
      // Fields the server already judged (after Preview or a refused Send) keep showing their state.
      if (input.value !== "" || input.closest(".keyword").classList.contains("invalid")) {
        touched[input.dataset.keyword] = true;
      }
      input.addEventListener("input", function () {
        touched[input.dataset.keyword] = true;
        updateCounter(input);
        validate();
      });
    });
  }

  /* Steps 2-4 of the compose form. */
  function initCompose() {
    var form = document.getElementById("campaign-form");
    if (!form) { return; }
    var text = strings();

    // Each template's keyword fields (two on channel auto) are checked against their own template.
    Array.prototype.slice.call(form.querySelectorAll("[data-keyword-set]")).forEach(function (set) {
      initKeywordSet(form, set, text);
    });

    // Link: show the inputs of the chosen kind only.
    function showLink() {
      var chosen = form.querySelector("input[name=link_kind]:checked");
      var kind = chosen ? chosen.value : "none";
      form.querySelectorAll("[data-link]").forEach(function (block) {
        block.hidden = block.dataset.link !== kind;
      });
    }
    form.querySelectorAll("input[name=link_kind]").forEach(function (radio) {
      radio.addEventListener("change", showLink);
    });
    showLink();

    // Recipients: the list only for openids/usernames, and the count before sending.
    var listBlock = form.querySelector('[data-recipients="list"]');
    var listInput = form.querySelector("textarea[name=recipient_list]");
    var output = document.getElementById("recipient-count");

    function recipientKind() {
      var chosen = form.querySelector("input[name=recipient_kind]:checked");
      return chosen ? chosen.value : "all_subscribed";
    }

    function quoted(part) {
      var names = part.shown.join(", ");
      if (part.total > part.shown.length) { names += " " + format(text.more, { count: part.total - part.shown.length }); }
      return names;
    }

    var credits = document.getElementById("recipient-credits");
    var subscribes = form.dataset.channel === "subscribe";

    function showCredits(holders) {
      if (!credits) { return; }
      credits.textContent = "";
      Object.keys(holders || {}).forEach(function (openid) {
        var li = document.createElement("li");
        li.dataset.openid = openid;
        li.className = holders[openid] ? "holds" : "no-credit";
        li.textContent = format(holders[openid] ? text.holds : text.no_credit, { openid: openid });
        credits.appendChild(li);
      });
    }

    var updateCount = debounce(function () {
      var body = { account: form.dataset.account, kind: recipientKind(), list: listInput.value };
      if (form.dataset.subscription) { body.subscription = form.dataset.subscription; }
      postJSON(form.dataset.countUrl, form, body).then(function (result) {
        var lines = [format(text.count, { count: result.count })];
        // A subscription needs no follow: only template messages fail for a follower who left.
        if (result.unsubscribed && !subscribes) {
          lines.push(format(text.unsubscribed, { count: result.unsubscribed }));
        }
        if (result.unknown.total && !subscribes) { lines.push(format(text.unknown, { names: quoted(result.unknown) })); }
        if (result.unbound.total) { lines.push(format(text.unbound, { names: quoted(result.unbound) })); }
        if (result.with_credit !== null && result.with_credit !== undefined) {
          lines.push(format(text.with_credit, { count: result.with_credit }));
          output.dataset.withCredit = result.with_credit;
        }
        output.textContent = lines.join(" ");
        output.dataset.count = result.count;
        showCredits(result.holders);
      }).catch(function () { output.textContent = ""; showCredits({}); });
    }, 300);

    function showRecipients() {
      var kind = recipientKind();
      listBlock.hidden = kind === "all_subscribed" || kind === "all_with_credit";
      updateCount();
    }
    form.querySelectorAll("input[name=recipient_kind]").forEach(function (radio) {
      radio.addEventListener("change", showRecipients);
    });
    listInput.addEventListener("input", updateCount);
    showRecipients();

    // Follower search: "Add" appends the follower to the pasted list.
    var search = document.getElementById("follower-search");
    var results = document.getElementById("follower-results");

    function addRecipient(follower) {
      var byUsername = recipientKind() === "usernames" && follower.username;
      if (!byUsername && recipientKind() !== "openids") {
        form.querySelector('input[name=recipient_kind][value="openids"]').checked = true;
      }
      var entry = byUsername ? follower.username : follower.openid;
      var current = listInput.value.replace(/\s+$/, "");
      listInput.value = current ? current + "\n" + entry : entry;
      showRecipients();
    }

    var runSearch = debounce(function () {
      var url = form.dataset.followersUrl + "?account=" + encodeURIComponent(form.dataset.account) +
        "&q=" + encodeURIComponent(search.value);
      fetch(url, { credentials: "same-origin" }).then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      }).then(function (body) {
        results.textContent = "";
        if (!body.results.length) {
          var empty = document.createElement("li");
          empty.textContent = text.no_results;
          results.appendChild(empty);
        }
        body.results.forEach(function (follower) {
          var li = document.createElement("li");
          var who = document.createElement("span");
          who.className = "who";
          var parts = [follower.openid];
          if (follower.username) { parts.push("@" + follower.username); }
          if (follower.remark) { parts.push(follower.remark); }
          if (!follower.subscribed) { parts.push("(" + text.unsubscribed_label + ")"); }
          who.textContent = parts.join(" · ");
          var add = document.createElement("button");
          add.type = "button";
          add.className = "secondary small";
          add.textContent = text.add;
          add.addEventListener("click", function () { addRecipient(follower); });
          li.appendChild(who);
          li.appendChild(add);
          results.appendChild(li);
        });
      }).catch(function () { results.textContent = ""; });
    }, 250);
    search.addEventListener("input", runSearch);
  }

  /* Campaign page: poll the progress about once a second until nothing is left to do. */
  function initProgress() {
    var panel = document.getElementById("progress");
    if (!panel || panel.dataset.finished === "true") { return; }

    function render(progress) {
      var percent = Number(progress.percent);
      document.getElementById("progress-fill").style.width = percent + "%";
      panel.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(percent));
      document.getElementById("progress-percent").textContent = percent + "%";
      document.getElementById("progress-done").textContent = progress.done;
      document.getElementById("progress-total").textContent = progress.total;
      var state = document.getElementById("campaign-state");
      state.textContent = progress.state_label;
      state.className = "state state-" + progress.state;
      Object.keys(progress.counts).forEach(function (status) {
        var cell = panel.querySelector('td[data-status="' + status + '"]');
        if (cell) { cell.textContent = progress.counts[status]; }
      });
      var retry = document.getElementById("retry-form");
      var cancel = document.getElementById("cancel-form");
      if (retry) { retry.hidden = !progress.can_retry; }
      if (cancel) { cancel.hidden = !progress.can_cancel; }
      var reschedule = document.getElementById("reschedule-form");
      if (reschedule) { reschedule.hidden = !progress.can_reschedule; }
      var wait = document.getElementById("campaign-wait");
      wait.textContent = progress.wait_text;
      wait.hidden = !progress.wait_text;
      var body = document.getElementById("failures");
      body.textContent = "";
      progress.failures.forEach(function (failure) {
        var row = document.createElement("tr");
        var who = document.createElement("td");
        who.className = "mono";
        who.textContent = failure.touser;
        var reason = document.createElement("td");
        reason.textContent = failure.reason;
        row.appendChild(who);
        row.appendChild(reason);
        body.appendChild(row);
      });
      document.getElementById("no-failures").hidden = progress.failures.length > 0;
      panel.dataset.finished = progress.finished ? "true" : "false";
    }

    function poll() {
      fetch(panel.dataset.progressUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (progress) {
          render(progress);
          if (!progress.finished) { setTimeout(poll, 1000); }
        })
        .catch(function () { setTimeout(poll, 3000); });
    }
    setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    initPicker();
    initCompose();
    initProgress();
  });
}());
