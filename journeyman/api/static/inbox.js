/*
 * Journeyman inbox: shows a customer's inbox messages on a web page.
 * No build step, no outside loads: this one file, served by the API at /v1/inbox.js.
 *
 *   <div id="journeyman-inbox"></div>
 *   <script src="https://journeyman.example.com/v1/inbox.js"
 *           data-user-id="c_42"
 *           data-user-hash="<hex HMAC-SHA256 of the user id, from your server>"
 *           data-write-key="wk_live_..."
 *           data-target="journeyman-inbox"></script>
 *
 * The messages are listed newest first with the unread count; opening one (a click
 * on it) marks it read, and follows its link when it has one. Text is inserted as
 * text, never as HTML. `window.JourneymanInbox.refresh()` reloads the list.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) { return; }
  var base = new URL(script.src, document.baseURI).origin;
  var userId = script.getAttribute("data-user-id") || "";
  var userHash = script.getAttribute("data-user-hash") || "";
  var writeKey = script.getAttribute("data-write-key") || "";
  var targetId = script.getAttribute("data-target") || "journeyman-inbox";

  function url(path) {
    var query = new URLSearchParams({ writeKey: writeKey, userHash: userHash });
    return base + "/v1/inbox/" + encodeURIComponent(userId) + path + "?" + query.toString();
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function safeLink(value) {
    if (!value) { return null; }
    try {
      var parsed = new URL(value, document.baseURI);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  var style = el("style", null,
    ".jm-inbox{font:14px/1.4 system-ui,sans-serif;max-width:28rem;border:1px solid #ddd;border-radius:8px}" +
    ".jm-inbox-head{padding:.6rem .8rem;font-weight:600;border-bottom:1px solid #eee}" +
    ".jm-inbox-item{display:block;padding:.6rem .8rem;border-bottom:1px solid #eee;cursor:pointer}" +
    ".jm-inbox-item.jm-unread{background:#f3f7ff}" +
    ".jm-inbox-item.jm-unread .jm-inbox-title::before{content:'\\25CF  ';color:#2563eb}" +
    ".jm-inbox-title{font-weight:600}" +
    ".jm-inbox-image{max-width:100%;border-radius:4px;margin-top:.3rem}" +
    ".jm-inbox-date{color:#666;font-size:12px}" +
    ".jm-inbox-empty,.jm-inbox-error{padding:.8rem;color:#666}");

  function render(target, data) {
    target.textContent = "";
    var box = el("div", "jm-inbox");
    var head = el("div", "jm-inbox-head", "Inbox");
    var count = el("span", "jm-inbox-unread", data.unread ? " (" + data.unread + " unread)" : "");
    head.appendChild(count);
    box.appendChild(head);
    if (!data.messages.length) {
      box.appendChild(el("div", "jm-inbox-empty", "No messages"));
    }
    data.messages.forEach(function (message) {
      var item = el("div", "jm-inbox-item" + (message.read_at ? "" : " jm-unread"));
      item.setAttribute("data-id", String(message.id));
      item.appendChild(el("div", "jm-inbox-title", message.title));
      item.appendChild(el("div", "jm-inbox-body", message.body));
      var image = safeLink(message.image);
      if (image) {
        var img = el("img", "jm-inbox-image");
        img.src = image;
        img.alt = "";
        item.appendChild(img);
      }
      item.appendChild(el("div", "jm-inbox-date", new Date(message.created_at).toLocaleString()));
      item.addEventListener("click", function () { open(message); });
      box.appendChild(item);
    });
    target.appendChild(box);
  }

  function open(message) {
    var link = safeLink(message.link);
    var done = message.read_at ? Promise.resolve() :
      fetch(url("/" + message.id + "/read"), { method: "POST" }).then(refresh);
    if (link) { done.then(function () { window.location.href = link; }); }
  }

  function refresh() {
    var target = document.getElementById(targetId);
    if (!target) { return Promise.resolve(); }
    return fetch(url(""))
      .then(function (response) {
        if (!response.ok) { throw new Error("inbox answered " + response.status); }
        return response.json();
      })
      .then(function (data) { render(target, data); })
      .catch(function (error) {
        target.textContent = "";
        target.appendChild(el("div", "jm-inbox-error", "The inbox could not be loaded: " + error.message));
      });
  }

  function start() {
    document.head.appendChild(style);
    refresh();
  }

  window.JourneymanInbox = { refresh: refresh };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
