// SDP status page: local times, and one EventSource per page that updates it live.
// Builds DOM with textContent only (never innerHTML from event data); fragments come from
// the server already escaped.
(function () {
  "use strict";

  function pad(n) { return String(n).padStart(2, "0"); }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) { return; }
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { return; }
      el.title = el.getAttribute("datetime");
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
        " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
      el.dataset.local = "1";
    });
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  var TONES = {
    ok: ["RUNNING", "SUCCESS"], warn: ["QUEUED"], bad: ["FAILED"]
  };
  function badge(value) {
    var node = el("span", "badge", value);
    node.dataset.tone = "muted";
    Object.keys(TONES).forEach(function (tone) {
      if (TONES[tone].indexOf(value) >= 0) { node.dataset.tone = tone; }
    });
    return node;
  }

  // -- the sandbox page's deployment cards: the rules of views.apply_event ---------------------

  function card(row) {
    var box = document.getElementById("deployments");
    if (!box || !row.deployment_id) { return null; }
    var found = box.querySelector('[data-deployment="' + row.deployment_id + '"]');
    if (found) { return found; }
    var shown = Number(box.dataset.pass || 0);
    box.querySelectorAll("[data-pass]").forEach(function (c) {
      shown = Math.max(shown, Number(c.dataset.pass));
    });
    if (row.pass_id > shown) {
      box.textContent = "";
      box.dataset.pass = row.pass_id;
      var label = document.getElementById("pass-label");
      if (label) { label.textContent = "Pass " + row.pass_id + " running"; }
    } else if (row.pass_id < shown) {
      return null;
    }
    var article = el("article", "deployment");
    article.dataset.deployment = row.deployment_id;
    article.dataset.pass = row.pass_id;
    var head = el("h3");
    head.appendChild(el("span", "resource", row.resource || ""));
    head.appendChild(el("span", "muted", (row.action || "") + " on " + (row.node || "")));
    article.appendChild(head);
    article.appendChild(el("ol", "stages"));
    var outcome = el("p", "outcome");
    outcome.appendChild(badge("QUEUED"));
    article.appendChild(outcome);
    box.appendChild(article);
    return article;
  }

  function stage(article, name) {
    var list = article.querySelector(".stages");
    var found = null;
    list.querySelectorAll(".stage").forEach(function (li) {
      if (li.dataset.stage === name) { found = li; }
    });
    if (!found) {
      found = el("li", "stage");
      found.dataset.stage = name;
      list.appendChild(found);
    }
    return found;
  }

  function setStage(li, status, message) {
    li.dataset.status = status;
    li.textContent = "";
    li.appendChild(el("span", "mark", status === "done" ? "✓" : status === "failed" ? "✗" : "…"));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "name", li.dataset.stage));
    if (status === "running") {
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "muted", "running"));
    }
    if (message) {
      li.appendChild(document.createTextNode(": "));
      li.appendChild(el("span", "why", message));
    }
  }

  function setOutcome(article, state, message) {
    var outcome = article.querySelector(".outcome");
    outcome.textContent = "";
    outcome.appendChild(badge(state));
    if (message) {
      outcome.appendChild(document.createTextNode(" "));
      outcome.appendChild(el("span", "why", message));
    }
  }

  function applyToCards(row) {
    var article = card(row);
    if (!article) { return; }
    var name = row.event || "";
    if (row.kind === "event") {
      if (name === "DEPLOY_FAILED") {
        setStage(stage(article, row.stage || "deploy"), "failed", row.message);
      } else if (row.stage && /_STARTED$/.test(name)) {
        var li = stage(article, row.stage);
        if (li.dataset.status !== "done" && li.dataset.status !== "failed") {
          setStage(li, "running");
        }
      } else if (row.stage && /_COMPLETED$/.test(name)) {
        setStage(stage(article, row.stage), "done");
      }
    } else if (row.kind === "state" && row.state) {
      setOutcome(article, row.state, row.state === "FAILED" ? row.message : "");
    }
  }

  // -- the log ---------------------------------------------------------------------------------

  function appendLog(row) {
    var log = document.getElementById("log");
    if (!log || !(row.kind === "log" || row.event === "DEPLOY_FAILED")) { return; }
    if (log.querySelector('[data-id="' + row.id + '"]')) { return; }
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    var li = el("li");
    li.dataset.id = row.id;
    if (row.event === "DEPLOY_FAILED") { li.dataset.failed = "1"; }
    var time = el("time", null, row.at);
    time.setAttribute("datetime", row.at);
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "res", row.resource || ""));
    if (row.stage) {
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "stage-name", row.stage));
    }
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "msg", row.message));
    log.appendChild(li);
    localTimes(li);
    var empty = document.getElementById("log-empty");
    if (empty) { empty.remove(); }
    while (log.children.length > 2000) { log.removeChild(log.firstElementChild); }
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  }

  // -- the overview's activity line ------------------------------------------------------------

  function showActivity(row) {
    document.querySelectorAll(".sandbox[data-sandbox]").forEach(function (article) {
      if (article.dataset.sandbox !== row.sandbox) { return; }
      var line = article.querySelector(".activity");
      if (!line) { return; }
      var what = row.kind === "state" ? row.state : row.kind === "event" ?
        (row.event === "DEPLOY_FAILED" ? "✗ " : /_COMPLETED$/.test(row.event || "") ? "✓ " : "… ") +
        (row.stage || "") : null;
      if (what) { line.textContent = (row.resource || "") + ": " + what; }
    });
  }

  // -- fragments refreshed when the status changes ---------------------------------------------

  var recent = [];
  var refreshing = false;
  var again = false;

  function apply(row) {
    applyToCards(row);
    appendLog(row);
    showActivity(row);
  }

  function refreshFragments() {
    if (refreshing) { again = true; return; }
    var regions = document.querySelectorAll("[data-fragment]");
    if (!regions.length) { return; }
    refreshing = true;
    var pending = regions.length;
    regions.forEach(function (region) {
      fetch(region.dataset.fragment, { credentials: "same-origin" }).then(function (response) {
        if (response.status === 401) { window.location.assign("/login"); }
        return response.ok ? response.text() : null;
      }).then(function (html) {
        if (html === null) { return; }
        region.innerHTML = html;
        localTimes(region);
        var live = region.querySelector("[data-last-event-id]");
        var since = live ? Number(live.dataset.lastEventId) : 0;
        recent.forEach(function (row) { if (row.id > since) { applyToCards(row); } });
      }).catch(function () { /* the next status event retries */ }).then(function () {
        pending -= 1;
        if (pending === 0) {
          refreshing = false;
          if (again) { again = false; refreshFragments(); }
        }
      });
    });
  }

  function connect(url) {
    var indicator = document.getElementById("live");
    function show(text, state) {
      if (!indicator) { return; }
      indicator.hidden = false;
      indicator.textContent = text;
      indicator.dataset.state = state;
    }
    var source = new EventSource(url);
    var opened = false;
    source.addEventListener("open", function () {
      show("● live", "live");
      if (opened) { refreshFragments(); }
      opened = true;
    });
    source.addEventListener("error", function () {
      // CLOSED: the server refused the stream (signed out or expired); the browser gives up.
      if (source.readyState === EventSource.CLOSED) {
        show("○ not live: reload the page to sign in again", "down");
      } else {
        show("○ reconnecting…", "down");
      }
    });
    source.addEventListener("progress", function (event) {
      var row = JSON.parse(event.data);
      recent.push(row);
      if (recent.length > 500) { recent.shift(); }
      apply(row);
    });
    source.addEventListener("status", refreshFragments);
    source.addEventListener("reload", function () { window.location.reload(); });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function start() {
    localTimes(document);
    var zone = document.getElementById("zone");
    if (zone && window.Intl) {
      zone.textContent = "Times in " + Intl.DateTimeFormat().resolvedOptions().timeZone;
    }
    var url = document.body.dataset.stream;
    if (url && window.EventSource) { connect(url); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
