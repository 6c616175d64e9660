/*! chatcore chat widget. Embed with:
 *   <script src="https://HOST/widget.js" data-bot="SLUG_OR_ID" async></script>
 * Optional: data-user-id + data-user-hash (identity verification: the hex
 * HMAC-SHA256 of the user id under the bot's widget secret), data-open="true".
 *
 * Served by chatcore-server from this file as is (no build step). Rules it
 * keeps: everything lives in a shadow root; text from the model or the user
 * only ever reaches the DOM through textContent (the markdown renderer builds
 * nodes; links must be http or https); the only requests go to the chatcore
 * server that served this script.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) return;
  var BOT = script.getAttribute("data-bot");
  if (!BOT) { console.error("chatcore widget: data-bot is missing"); return; }
  var BASE = new URL(script.src).origin;
  var USER_ID = script.getAttribute("data-user-id");
  var USER_HASH = script.getAttribute("data-user-hash");
  var OPEN_AT_LOAD = script.getAttribute("data-open") === "true";
  var STORE_KEY = "chatcore-widget:" + BASE + ":" + BOT + (USER_ID ? ":u:" + USER_ID : "");
  var SVG = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------ storage
  function load() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function save(state) {
    try { localStorage.setItem(STORE_KEY, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }
  var saved = load();

  // ------------------------------------------------------------ DOM helpers
  function el(tag, attrs, children) {
    var n = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
        var v = attrs[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === "text") n.textContent = v;
        else if (k === "class") n.className = v;
        else if (k.slice(0, 2) === "on") n.addEventListener(k.slice(2), v);
        else n.setAttribute(k, v === true ? "" : String(v));
      }
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      n.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return n;
  }
  function icon(name) {
    var paths = {
      chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z",
      help: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 15.5a1.25 1.25 0 1 1 0-2.5 1.25 1.25 0 0 1 0 2.5zm1.6-5.3c-.8.5-1.1.8-1.1 1.6h-1.9c0-1.6.6-2.3 1.7-3 .8-.5 1.2-.9 1.2-1.6 0-.8-.7-1.4-1.5-1.4-.9 0-1.5.6-1.6 1.5H8.5C8.6 7.3 10 6 12 6c2 0 3.4 1.2 3.4 3 0 1.4-.8 2.3-1.8 3.2z",
      sparkle: "M12 2l2.2 6.3L20.5 10l-6.3 2.2L12 18.5l-2.2-6.3L3.5 10l6.3-1.7zM19 15l1 3 3 1-3 1-1 3-1-3-3-1 3-1z",
      support: "M12 3a8 8 0 0 0-8 8v5a3 3 0 0 0 3 3h2v-7H6v-1a6 6 0 0 1 12 0v1h-3v7h2v1h-5v2h5a2 2 0 0 0 2-2v-1.2A3 3 0 0 0 20 16v-5a8 8 0 0 0-8-8z",
      close: "M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6L19 6.4 17.6 5 12 10.6z",
      send: "M3 20.5 21 12 3 3.5v6.6L15 12 3 13.9z",
      stop: "M7 7h10v10H7z",
      up: "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6c-.4.4-.6.9-.6 1.4v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z",
      down: "M22 3h-4v12h4V3zM2 14a2 2 0 0 0 2 2h6.3l-1 4.6v.3c0 .4.2.8.4 1.1l1.1 1 6.6-6.6c.4-.4.6-.9.6-1.4V5a2 2 0 0 0-2-2H7c-.8 0-1.5.5-1.8 1.2l-3 7.1c-.1.2-.2.5-.2.7v2z",
      history: "M13 3a9 9 0 0 0-9 9H1l4 4 4-4H6a7 7 0 1 1 2.1 5l-1.4 1.4A9 9 0 1 0 13 3zm-1 5v5l4.3 2.5.7-1.2-3.5-2.1V8z",
      plus: "M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z"
    };
    var s = document.createElementNS(SVG, "svg");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("aria-hidden", "true");
    s.setAttribute("focusable", "false");
    var p = document.createElementNS(SVG, "path");
    p.setAttribute("d", paths[name] || paths.chat);
    p.setAttribute("fill", "currentColor");
    s.appendChild(p);
    return s;
  }

  // ------------------------------------------------------------ safe markdown
  // Builds DOM nodes; never parses HTML. Supported: paragraphs, headings,
  // fenced code, lists, quotes, `code`, **bold**, *italic*, [links](http…).
  function safeHref(url) {
    try {
      var u = new URL(url, BASE);
      if (u.protocol === "http:" || u.protocol === "https:") return u.href;
    } catch (e) { /* not a URL */ }
    return null;
  }
  function inline(text, parent) {
    var re = /(`[^`]+`)|(\*\*[^*]+\*\*)|(__[^_]+__)|(\*[^*\s][^*]*\*)|(_[^_\s][^_]*_)|(\[[^\]]+\]\([^)\s]+\))|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;
    var last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      var t = m[0];
      if (m[1]) parent.appendChild(el("code", { text: t.slice(1, -1) }));
      else if (m[2] || m[3]) { var b = el("strong"); inline(t.slice(2, -2), b); parent.appendChild(b); }
      else if (m[4] || m[5]) { var i = el("em"); inline(t.slice(1, -1), i); parent.appendChild(i); }
      else if (m[6]) {
        var close = t.indexOf("](");
        var label = t.slice(1, close), href = safeHref(t.slice(close + 2, -1));
        if (href) {
          var a = el("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow" });
          inline(label, a);
          parent.appendChild(a);
        } else parent.appendChild(document.createTextNode(t));
      } else if (m[7]) {
        var h = safeHref(t);
        parent.appendChild(h ? el("a", { href: h, target: "_blank", rel: "noopener noreferrer nofollow", text: t }) : document.createTextNode(t));
      }
      last = m.index + t.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }
  function markdown(src) {
    var out = document.createDocumentFragment();
    var lines = String(src).replace(/\r\n?/g, "\n").split("\n");
    var i = 0, para = [];
    function flush() {
      if (para.length) { var p = el("p"); inline(para.join("\n"), p); out.appendChild(p); para = []; }
    }
    while (i < lines.length) {
      var line = lines[i];
      var fence = /^\s*```/.exec(line);
      if (fence) {
        flush();
        var code = [];
        i++;
        while (i < lines.length && !/^\s*```/.test(lines[i])) { code.push(lines[i]); i++; }
        i++;
        out.appendChild(el("pre", null, [el("code", { text: code.join("\n") })]));
        continue;
      }
      var h = /^(#{1,4})\s+(.*)$/.exec(line);
      if (h) {
        flush();
        var hn = el("h" + Math.min(h[1].length + 2, 6), { class: "md-h" });
        inline(h[2], hn);
        out.appendChild(hn);
        i++;
        continue;
      }
      if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        flush();
        var ordered = /^\s*\d+[.)]\s+/.test(line);
        var list = el(ordered ? "ol" : "ul");
        while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
          var li = el("li");
          inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), li);
          list.appendChild(li);
          i++;
        }
        out.appendChild(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        flush();
        var q = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) { q.push(lines[i].replace(/^\s*>\s?/, "")); i++; }
        var bq = el("blockquote");
        inline(q.join("\n"), bq);
        out.appendChild(bq);
        continue;
      }
      if (/^\s*$/.test(line)) { flush(); i++; continue; }
      para.push(line);
      i++;
    }
    flush();
    return out;
  }

  // ------------------------------------------------------------ styles
  var CSS = [
    // The page's rules on the host element (even !important ones) stop here:
    // inside a shadow tree, !important beats the outer page.
    ":host{all:initial !important;--cc-primary:#2563eb;--cc-on-primary:#fff;--cc-bg:#fff;--cc-fg:#111827;--cc-muted:#6b7280;--cc-bubble:#f3f4f6;--cc-border:#e5e7eb;--cc-shadow:0 12px 40px rgba(0,0,0,.18);",
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif !important;font-size:15px !important;line-height:1.45 !important;color:var(--cc-fg) !important}",
    "@media (prefers-color-scheme:dark){:host{--cc-bg:#111827;--cc-fg:#f3f4f6;--cc-muted:#9ca3af;--cc-bubble:#1f2937;--cc-border:#374151;--cc-shadow:0 12px 40px rgba(0,0,0,.6)}}",
    "*{box-sizing:border-box}[hidden]{display:none !important}",
    ".launcher{position:fixed;bottom:20px;right:20px;width:56px;height:56px;border-radius:50%;border:0;cursor:pointer;background:var(--cc-primary);color:var(--cc-on-primary);box-shadow:var(--cc-shadow);display:flex;align-items:center;justify-content:center;z-index:2147483000;transition:transform .15s}",
    ".launcher:hover{transform:scale(1.06)}.launcher svg{width:28px;height:28px}",
    ".left .launcher{right:auto;left:20px}",
    ".panel{position:fixed;bottom:88px;right:20px;width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 110px);background:var(--cc-bg);color:var(--cc-fg);border:1px solid var(--cc-border);border-radius:16px;box-shadow:var(--cc-shadow);display:flex;flex-direction:column;overflow:hidden;z-index:2147483001}",
    ".left .panel{right:auto;left:20px}.panel[hidden]{display:none}",
    "header{background:var(--cc-primary);color:var(--cc-on-primary);padding:12px 12px 12px 16px;display:flex;align-items:center;gap:6px}",
    "header h2{font-size:16px;font-weight:600;margin:0;flex:1;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".icon-btn{background:transparent;border:0;color:inherit;cursor:pointer;width:34px;height:34px;border-radius:8px;display:flex;align-items:center;justify-content:center;padding:0}",
    ".icon-btn:hover{background:rgba(255,255,255,.18)}.icon-btn svg{width:20px;height:20px}",
    ".log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:10px}",
    ".msg{max-width:85%;padding:9px 13px;border-radius:14px;overflow-wrap:anywhere;white-space:normal}",
    ".msg.user{align-self:flex-end;background:var(--cc-primary);color:var(--cc-on-primary);border-bottom-right-radius:4px;white-space:pre-wrap}",
    ".msg.assistant{align-self:flex-start;background:var(--cc-bubble);border-bottom-left-radius:4px}",
    ".msg p{margin:0 0 .5em}.msg p:last-child{margin-bottom:0}.msg ul,.msg ol{margin:.2em 0 .5em;padding-left:1.3em}",
    ".msg pre{background:rgba(0,0,0,.08);padding:8px;border-radius:8px;overflow-x:auto;margin:.3em 0}.msg code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}",
    ".msg :not(pre)>code{background:rgba(0,0,0,.08);padding:0 4px;border-radius:4px}",
    ".msg blockquote{margin:.3em 0;padding-left:10px;border-left:3px solid var(--cc-border);color:var(--cc-muted)}",
    ".msg a{color:inherit;text-decoration:underline}.md-h{margin:.3em 0;font-size:1em}",
    ".cursor::after{content:'\\258D';animation:blink 1s steps(2) infinite;margin-left:1px}@keyframes blink{50%{opacity:0}}",
    ".meta{align-self:flex-start;display:flex;flex-wrap:wrap;gap:6px;align-items:center;font-size:13px;color:var(--cc-muted);max-width:85%}",
    ".sources{align-self:flex-start;font-size:13px;color:var(--cc-muted);max-width:85%;border-left:3px solid var(--cc-border);padding-left:8px}",
    ".sources strong{display:block;margin-bottom:2px}.sources ol{margin:0;padding-left:1.2em}",
    ".thumb{background:transparent;border:1px solid var(--cc-border);color:var(--cc-muted);border-radius:8px;width:30px;height:28px;cursor:pointer;display:inline-flex;align-items:center;justify-content:center}",
    ".thumb svg{width:15px;height:15px}.thumb[aria-pressed=true]{background:var(--cc-primary);color:var(--cc-on-primary);border-color:var(--cc-primary)}",
    ".comment{display:flex;gap:6px;width:100%}.comment input{flex:1;min-width:0;font:inherit;font-size:13px;padding:4px 8px;border:1px solid var(--cc-border);border-radius:8px;background:var(--cc-bg);color:var(--cc-fg)}",
    ".link-btn{background:none;border:0;color:var(--cc-primary);cursor:pointer;font:inherit;font-size:13px;padding:0;text-decoration:underline}",
    "@media (prefers-color-scheme:dark){.link-btn{color:var(--cc-fg)}}",
    ".error{align-self:stretch;background:#fef2f2;color:#991b1b;border:1px solid #fecaca;border-radius:10px;padding:8px 10px;font-size:13px;display:flex;gap:8px;align-items:center;justify-content:space-between}",
    "@media (prefers-color-scheme:dark){.error{background:#450a0a;color:#fecaca;border-color:#7f1d1d}}",
    ".suggestions{display:flex;flex-wrap:wrap;gap:6px}.chip{border:1px solid var(--cc-primary);color:var(--cc-primary);background:transparent;border-radius:999px;padding:5px 11px;cursor:pointer;font:inherit;font-size:13px}",
    "@media (prefers-color-scheme:dark){.chip{color:var(--cc-fg)}}",
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid var(--cc-border);background:var(--cc-bg)}",
    "textarea{flex:1;resize:none;font:inherit;padding:9px 12px;border:1px solid var(--cc-border);border-radius:12px;background:var(--cc-bg);color:var(--cc-fg);max-height:120px;min-height:42px}",
    "textarea:focus,button:focus-visible,input:focus{outline:2px solid var(--cc-primary);outline-offset:1px}",
    ".send{width:42px;height:42px;border-radius:12px;border:0;background:var(--cc-primary);color:var(--cc-on-primary);cursor:pointer;display:flex;align-items:center;justify-content:center;flex:none}",
    ".send svg{width:20px;height:20px}.send:disabled{opacity:.5;cursor:default}",
    ".history{padding:12px 16px;overflow-y:auto;flex:1}.history h3{font-size:14px;margin:0 0 8px}.history ul{list-style:none;margin:0;padding:0}",
    ".history li button{width:100%;text-align:left;background:var(--cc-bubble);color:var(--cc-fg);border:0;border-radius:10px;padding:8px 10px;margin-bottom:6px;cursor:pointer;font:inherit}",
    ".notice{color:var(--cc-muted);font-size:13px;text-align:center;padding:4px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    "@media (max-width:480px){.panel{inset:0;width:100%;max-width:none;height:100%;max-height:none;border-radius:0;border:0}.launcher{bottom:16px;right:16px}.left .launcher{left:16px}.msg{max-width:92%}}"
  ].join("\n");

  // ------------------------------------------------------------ the widget
  var host = el("div", { id: "chatcore-widget", "data-bot": BOT });
  var root = host.attachShadow({ mode: "open" });
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch (e) {
    root.appendChild(el("style", { text: CSS }));
  }

  var config = null, token = saved.token || null, tokenExpires = saved.expires_at || null;
  var conversationId = saved.conversation_id || null;
  var busy = false, controller = null, blocked = null;
  var wrap = el("div", { class: "wrap" });
  var launcher = el("button", { class: "launcher", type: "button", "aria-label": "Open chat", "aria-expanded": "false", "aria-controls": "cc-panel" }, [icon("chat")]);
  var title = el("h2", { id: "cc-title", text: "Chat" });
  var historyBtn = el("button", { class: "icon-btn", type: "button", "aria-label": "Earlier conversations", title: "Earlier conversations" }, [icon("history")]);
  var newBtn = el("button", { class: "icon-btn", type: "button", "aria-label": "New conversation", title: "New conversation" }, [icon("plus")]);
  var closeBtn = el("button", { class: "icon-btn", type: "button", "aria-label": "Close chat", title: "Close" }, [icon("close")]);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions text", "aria-label": "Messages", tabindex: "0" });
  var history = el("div", { class: "history", hidden: true });
  var input = el("textarea", { id: "cc-input", rows: "1", "aria-label": "Message", placeholder: "Type a message…", maxlength: "4000" });
  var sendBtn = el("button", { class: "send", type: "submit", "aria-label": "Send" }, [icon("send")]);
  var status = el("div", { class: "sr", role: "status", "aria-live": "polite" });
  var form = el("form", { "aria-label": "Send a message" }, [input, sendBtn]);
  var panel = el("section", { class: "panel", id: "cc-panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "cc-title", hidden: true }, [
    el("header", null, [title, historyBtn, newBtn, closeBtn]), log, history, form, status
  ]);
  wrap.appendChild(panel);
  wrap.appendChild(launcher);
  root.appendChild(wrap);

  function api(path, opts) {
    opts = opts || {};
    var headers = { "content-type": "application/json" };
    if (opts.auth && token) headers.authorization = "Bearer " + token;
    return fetch(BASE + path, {
      method: opts.method || "GET",
      headers: opts.method && opts.method !== "GET" ? headers : (opts.auth && token ? { authorization: headers.authorization } : {}),
      body: opts.body ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
      credentials: "omit",
      mode: "cors"
    });
  }
  function errorText(body, fallback) {
    return (body && body.error && body.error.message) || fallback;
  }
  function announce(text) { status.textContent = text; }
  function scroll() { log.scrollTop = log.scrollHeight; }

  function persist() { save({ token: token, expires_at: tokenExpires, conversation_id: conversationId }); }

  function session(force) {
    var fresh = token && tokenExpires && Date.parse(tokenExpires) - Date.now() > 60000;
    if (fresh && !force) return Promise.resolve(token);
    var body = {};
    if (USER_ID) { body.user_id = USER_ID; body.user_hash = USER_HASH || ""; }
    if (token) body.previous_token = token;
    return api("/v1/widget/" + encodeURIComponent(BOT) + "/session", { method: "POST", body: body }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (j) {
        if (!r.ok) {
          var err = new Error(errorText(j, "This chat is not available here."));
          err.status = r.status;
          throw err;
        }
        token = j.token;
        tokenExpires = j.expires_at;
        persist();
        return token;
      });
    });
  }

  function bubble(role, text) {
    var b = el("div", { class: "msg " + role });
    if (role === "assistant") b.appendChild(markdown(text));
    else b.textContent = text;
    log.appendChild(b);
    return b;
  }

  function showError(text, retry) {
    var box = el("div", { class: "error", role: "alert" }, [el("span", { text: text })]);
    if (retry) {
      box.appendChild(el("button", { class: "link-btn", type: "button", text: "Retry", onclick: function () { box.remove(); retry(); } }));
    }
    log.appendChild(box);
    scroll();
    return box;
  }

  function sources(list) {
    if (!config || !config.settings.show_sources || !list || !list.length) return null;
    var ol = el("ol");
    var seen = {};
    list.forEach(function (s) {
      var key = s.document_id || s.title;
      if (seen[key]) return;
      seen[key] = true;
      ol.appendChild(el("li", { title: s.snippet || "" , text: s.title || "Untitled" }));
    });
    return el("div", { class: "sources", "aria-label": "Sources" }, [el("strong", { text: "Sources" }), ol]);
  }

  function feedbackBar(messageId, current) {
    var bar = el("div", { class: "meta", "data-message-id": messageId });
    var up = el("button", { class: "thumb", type: "button", "aria-label": "Good answer", "aria-pressed": current === "up" ? "true" : "false", "data-rating": "up" }, [icon("up")]);
    var down = el("button", { class: "thumb", type: "button", "aria-label": "Bad answer", "aria-pressed": current === "down" ? "true" : "false", "data-rating": "down" }, [icon("down")]);
    var note = el("span", { class: "note" });
    function rate(rating, comment) {
      var body = { rating: rating };
      if (comment) body.comment = comment;
      return session().then(function () {
        return api("/v1/messages/" + encodeURIComponent(messageId) + "/feedback", { method: "POST", body: body, auth: true });
      }).then(function (r) {
        if (!r.ok) throw new Error("feedback failed");
        up.setAttribute("aria-pressed", rating === "up" ? "true" : "false");
        down.setAttribute("aria-pressed", rating === "down" ? "true" : "false");
        note.textContent = comment ? "Thanks for the comment." : "Thanks for your feedback.";
        announce(note.textContent);
        if (!comment && !bar.querySelector(".comment-toggle")) {
          bar.appendChild(el("button", { class: "link-btn comment-toggle", type: "button", text: "Add a comment", onclick: function (ev) {
            ev.target.remove();
            var field = el("input", { type: "text", "aria-label": "Comment on this answer", maxlength: "2000", placeholder: "What could be better?" });
            var box = el("form", { class: "comment" }, [field, el("button", { class: "link-btn", type: "submit", text: "Send" })]);
            box.addEventListener("submit", function (e) {
              e.preventDefault();
              if (!field.value.trim()) return;
              var currentRating = down.getAttribute("aria-pressed") === "true" ? "down" : "up";
              rate(currentRating, field.value.trim()).then(function () { box.remove(); });
            });
            bar.appendChild(box);
            field.focus();
          } }));
        }
      }).catch(function () { note.textContent = "Could not send feedback."; });
    }
    up.addEventListener("click", function () { rate("up"); });
    down.addEventListener("click", function () { rate("down"); });
    bar.appendChild(up);
    bar.appendChild(down);
    bar.appendChild(note);
    return bar;
  }

  function setBusy(on) {
    busy = on;
    sendBtn.replaceChildren(icon(on ? "stop" : "send"));
    sendBtn.setAttribute("aria-label", on ? "Stop" : "Send");
    sendBtn.type = on ? "button" : "submit";
    sendBtn.disabled = !!blocked;
  }

  // Reads our SSE: `event: <name>\ndata: <json>\n\n`.
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) return;
        buf += decoder.decode(r.value, { stream: true });
        var idx;
        while ((idx = buf.indexOf("\n\n")) >= 0) {
          var raw = buf.slice(0, idx);
          buf = buf.slice(idx + 2);
          var name = "message", data = [];
          raw.split("\n").forEach(function (l) {
            if (l.indexOf("event:") === 0) name = l.slice(6).trim();
            else if (l.indexOf("data:") === 0) data.push(l.slice(5).replace(/^ /, ""));
          });
          if (!data.length) continue;
          var parsed = null;
          try { parsed = JSON.parse(data.join("\n")); } catch (e) { continue; }
          onEvent(name, parsed);
        }
        return pump();
      });
    }
    return pump();
  }

  function send(text, retried) {
    if (busy || blocked) return;
    text = (text || "").trim();
    if (!text) return;
    clearSuggestions();
    var userBubble = retried ? retried : bubble("user", text);
    scroll();
    setBusy(true);
    var answer = null, content = "", messageId = null, ended = false, frame = 0;
    function render() {
      frame = 0;
      if (!answer) return;
      answer.replaceChildren(markdown(content));
      if (!ended) answer.classList.add("cursor");
      scroll();
    }
    controller = new AbortController();
    var body = { bot_id: BOT, message: text, stream: true };
    if (conversationId) body.conversation_id = conversationId;
    function attempt(renewed) {
      return session(renewed).then(function () {
        return api("/v1/chat/public", { method: "POST", body: body, auth: true, signal: controller.signal });
      }).then(function (r) {
        if (r.status === 401 && !renewed) return attempt(true);
        if (r.status === 404 && body.conversation_id) {
          // The stored conversation is gone: start a new one.
          delete body.conversation_id;
          conversationId = null;
          persist();
          return attempt(renewed);
        }
        if (!r.ok) {
          return r.json().catch(function () { return null; }).then(function (j) {
            var e = new Error(errorText(j, "Something went wrong (" + r.status + ")."));
            e.status = r.status;
            throw e;
          });
        }
        answer = bubble("assistant", "");
        answer.classList.add("cursor");
        answer.setAttribute("aria-busy", "true");
        return readEvents(r, function (name, data) {
          if (name === "start") {
            conversationId = data.conversation_id;
            messageId = data.message_id;
            persist();
          } else if (name === "delta") {
            content += data.content || "";
            if (!frame) frame = requestAnimationFrame(render);
          } else if (name === "done") {
            ended = true;
            render();
            answer.classList.remove("cursor");
            answer.removeAttribute("aria-busy");
            var src = sources(data.sources);
            if (src) log.appendChild(src);
            if (messageId) log.appendChild(feedbackBar(messageId, null));
            announce("Answer complete");
          } else if (name === "error") {
            ended = true;
            render();
            answer.classList.remove("cursor");
            showError(errorText(data, "The answer was cut off."), function () { send(text, userBubble); });
          }
        });
      });
    }
    attempt(false).catch(function (e) {
      if (e && e.name === "AbortError") {
        if (answer) {
          ended = true;
          render();
          answer.classList.remove("cursor");
          answer.removeAttribute("aria-busy");
          log.appendChild(el("div", { class: "meta", text: "Stopped." }));
          if (messageId) log.appendChild(feedbackBar(messageId, null));
        } else {
          log.appendChild(el("div", { class: "meta", text: "Stopped." }));
        }
        announce("Stopped");
        return;
      }
      if (answer && !content) { answer.remove(); answer = null; }
      if (answer) answer.classList.remove("cursor");
      showError((e && e.message) || "Could not send the message.", function () { send(text, userBubble); });
    }).then(function () {
      controller = null;
      setBusy(false);
      scroll();
    });
  }

  var suggestionBox = null;
  function clearSuggestions() { if (suggestionBox) { suggestionBox.remove(); suggestionBox = null; } }
  function greet() {
    log.replaceChildren();
    if (config && config.settings.greeting) bubble("assistant", config.settings.greeting);
    var qs = (config && config.settings.suggested_questions) || [];
    if (qs.length) {
      suggestionBox = el("div", { class: "suggestions", role: "group", "aria-label": "Suggested questions" });
      qs.forEach(function (q) {
        suggestionBox.appendChild(el("button", { class: "chip", type: "button", text: q, onclick: function () { send(q); } }));
      });
      log.appendChild(suggestionBox);
    }
  }

  function showConversation(id) {
    return session().then(function () {
      return api("/v1/widget/" + encodeURIComponent(BOT) + "/conversations/" + encodeURIComponent(id) + "/messages", { auth: true });
    }).then(function (r) {
      if (r.status === 404) { conversationId = null; persist(); greet(); return; }
      if (!r.ok) throw new Error("history failed");
      return r.json().then(function (j) {
        conversationId = id;
        persist();
        greet();
        clearSuggestions();
        j.data.forEach(function (m) {
          if (m.role === "user") bubble("user", m.content);
          else if (m.role === "assistant") {
            bubble("assistant", m.content || (m.status === "error" ? "(no answer)" : ""));
            var src = sources(m.sources);
            if (src) log.appendChild(src);
            if (m.status !== "error") log.appendChild(feedbackBar(m.id, m.rating));
          }
        });
        scroll();
      });
    });
  }

  function toggleHistory() {
    if (!history.hidden) { history.hidden = true; log.hidden = false; form.hidden = false; historyBtn.focus(); return; }
    history.replaceChildren(el("p", { class: "notice", text: "Loading…" }));
    history.hidden = false; log.hidden = true; form.hidden = true;
    session().then(function () {
      return api("/v1/widget/" + encodeURIComponent(BOT) + "/conversations?limit=20", { auth: true });
    }).then(function (r) { return r.ok ? r.json() : { data: [] }; }).then(function (j) {
      var ul = el("ul", { "aria-label": "Earlier conversations" });
      j.data.forEach(function (c) {
        var when = new Date(c.updated_at);
        ul.appendChild(el("li", null, [el("button", { type: "button", "data-conversation-id": c.id, onclick: function () {
          history.hidden = true; log.hidden = false; form.hidden = false;
          showConversation(c.id).then(function () { input.focus(); });
        } }, [el("strong", { text: c.title || "Conversation" }), el("br"), el("small", { text: when.toLocaleString() })])]));
      });
      history.replaceChildren(el("h3", { text: "Earlier conversations" }), j.data.length ? ul : el("p", { class: "notice", text: "No earlier conversations." }));
      var first = history.querySelector("button");
      if (first) first.focus();
    }).catch(function () { history.replaceChildren(el("p", { class: "notice", text: "Could not load earlier conversations." })); });
  }

  var opened = false;
  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close chat");
    if (!opened) {
      opened = true;
      session().catch(function (e) {
        blocked = e.message;
        input.disabled = true;
        sendBtn.disabled = true;
        showError(e.status === 403 ? "This chat is not available on this site." : e.message);
      });
    }
    input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.focus();
  }
  launcher.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  closeBtn.addEventListener("click", close);
  historyBtn.addEventListener("click", toggleHistory);
  newBtn.addEventListener("click", function () {
    if (busy && controller) controller.abort();
    conversationId = null;
    persist();
    history.hidden = true; log.hidden = false; form.hidden = false;
    greet();
    input.focus();
  });
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") { e.preventDefault(); close(); } });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var t = input.value;
    input.value = "";
    send(t);
  });
  sendBtn.addEventListener("click", function (e) {
    if (busy && controller) { e.preventDefault(); controller.abort(); }
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!busy) form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
    }
  });

  function start() {
    api("/v1/widget/" + encodeURIComponent(BOT) + "/config").then(function (r) {
      if (!r.ok) throw new Error("config");
      return r.json();
    }).then(function (c) {
      config = c;
      var s = c.settings;
      host.style.setProperty("--cc-primary", s.primary_color);
      host.style.setProperty("--cc-on-primary", s.primary_text_color);
      wrap.className = "wrap" + (s.position === "bottom-left" ? " left" : "");
      launcher.replaceChildren(icon(s.launcher_icon));
      title.textContent = c.title;
      if (s.placeholder) input.setAttribute("placeholder", s.placeholder);
      greet();
      // Shown once configured: no flash of default colours, and nothing at
      // all on a site that may not embed the bot.
      document.body.appendChild(host);
      if (conversationId) showConversation(conversationId).catch(function () { /* shown on send */ });
      if (OPEN_AT_LOAD || saved.open) open();
    }).catch(function () {
      // Also what a site that may not embed the bot gets: its origin is not
      // in the bot's allowed origins, so it may not read the configuration.
      console.error("chatcore widget: bot " + BOT + " is not available on this site (is " + location.origin + " one of its allowed origins?)");
    });
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
