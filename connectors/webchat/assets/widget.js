/*
 * Switchboard web chat widget.
 *
 * Embed with one tag:  <script src="https://switchboard.example.com/widget.js" defer></script>
 * Optional attribute:  data-open="true"  opens the chat panel as soon as the page loads.
 * Optional attribute:  data-channel="NAME"  the web chat instance to use (default "web").
 *
 * Plain JavaScript, no dependencies, no build step. Speaks the wire protocol described in
 * docs/webchat-protocol.md over one WebSocket derived from this script's own src.
 * All user and server text is rendered with textContent, never as HTML.
 */
(function () {
  'use strict';

  if (window.Switchboard && window.Switchboard.__loaded) return; // included twice

  var TOKEN_KEY = 'switchboard.token';
  var PENDING_KEY = 'switchboard.pending';
  var TYPING_THROTTLE_MS = 2000; // send typing:true at most this often
  var TYPING_IDLE_MS = 3000; // send typing:false after this long without input
  var REMOTE_TYPING_MS = 10000; // forget a remote typing indicator after this long
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var WELCOME_TIMEOUT_MS = 10000;

  // ---- where we come from ---------------------------------------------------------------

  var script = document.currentScript;
  if (!script) {
    var scripts = document.getElementsByTagName('script');
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (/\/widget\.js(\?|#|$)/.test(scripts[i].src)) { script = scripts[i]; break; }
    }
  }
  var scriptSrc = (script && script.src) || location.href;
  var cssUrl = new URL('widget.css', scriptSrc).href;
  // The web chat instance to talk to (a `[[channel]]` of kind webchat); `web` unless told.
  var channelName = (script && script.getAttribute('data-channel')) || 'web';
  var wsUrl = (function () {
    var u = new URL('channels/webchat/' + encodeURIComponent(channelName) + '/ws', scriptSrc);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.hash = '';
    u.search = '';
    return u.href;
  })();
  var openOnLoad = !!script && script.getAttribute('data-open') === 'true';
  // A customer signed in to the embedding site, vouched for by its server: an identity token
  // (a short-lived JWT for this page's origin), or the legacy email signature.
  var identityToken = (script && script.getAttribute('data-user-token')) || null;
  var identity = null;
  if (!identityToken && script && script.getAttribute('data-user-email') && script.getAttribute('data-user-signature')) {
    identity = {
      email: script.getAttribute('data-user-email'),
      signature: script.getAttribute('data-user-signature')
    };
  }

  // ---- storage (localStorage may be unavailable: fall back to memory) -----------------------

  var memoryStore = {};
  function storeGet(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return memoryStore[key] != null ? memoryStore[key] : null; }
  }
  function storeSet(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { memoryStore[key] = value; }
  }
  function storeRemove(key) {
    try { window.localStorage.removeItem(key); } catch (e) { delete memoryStore[key]; }
  }

  function loadToken() { return storeGet(TOKEN_KEY) || null; }
  function saveToken(token) { if (token) storeSet(TOKEN_KEY, token); }
  function forgetToken() { storeRemove(TOKEN_KEY); }

  // Pending (unacknowledged) messages: [{client_id, text, created_at}], oldest first. Shared by
  // every tab of this site; always re-read before changing it so tabs don't overwrite each other.
  function loadPending() {
    try {
      var list = JSON.parse(storeGet(PENDING_KEY) || '[]');
      if (!Array.isArray(list)) return [];
      return list.filter(function (p) {
        return p && typeof p.client_id === 'string' && typeof p.text === 'string';
      });
    } catch (e) { return []; }
  }
  function savePending(list) {
    if (list.length) storeSet(PENDING_KEY, JSON.stringify(list));
    else storeRemove(PENDING_KEY);
  }
  function addPending(entry) {
    var list = loadPending();
    list.push(entry);
    savePending(list);
  }
  function findPending(clientId) {
    var list = loadPending();
    for (var i = 0; i < list.length; i++) if (list[i].client_id === clientId) return list[i];
    return null;
  }
  function removePending(clientId) {
    var list = loadPending();
    var kept = list.filter(function (p) { return p.client_id !== clientId; });
    if (kept.length !== list.length) savePending(kept);
  }

  function newClientId() {
    try {
      if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    } catch (e) { /* not a secure context */ }
    var bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    var hex = '';
    for (var j = 0; j < bytes.length; j++) hex += (bytes[j] < 16 ? '0' : '') + bytes[j].toString(16);
    return hex;
  }

  // ---- DOM ------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var name in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, name)) node.setAttribute(name, attrs[name]);
      }
    }
    if (text != null) node.textContent = text;
    return node;
  }

  // Constant markup only (no user data).
  var CHAT_ICON = '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false">' +
    '<path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  var CLOSE_ICON = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">' +
    '<path fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" d="M6 6l12 12M18 6L6 18"/></svg>';
  var SEND_ICON = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">' +
    '<path fill="currentColor" d="M3 20.5l18-8.5L3 3.5v6.6l12 1.9-12 1.9z"/></svg>';

  var root, launcher, panel, closeBtn, list, typingEl, typingLabel, statusEl, noticeEl, input, sendBtn;
  var draftEl = null;

  function buildDom() {
    var link = el('link', { rel: 'stylesheet', href: cssUrl, id: 'sb-style' });
    root = el('div', { id: 'sb-root' });
    // Stay invisible until our stylesheet has loaded, so the page never flashes unstyled markup.
    root.style.visibility = 'hidden';
    var shown = false;
    function show() { if (!shown) { shown = true; root.style.visibility = ''; } }
    link.addEventListener('load', show);
    link.addEventListener('error', show);
    setTimeout(show, 3000);
    (document.head || document.documentElement).appendChild(link);

    launcher = el('button', {
      id: 'sb-launcher', type: 'button', 'class': 'sb-launcher',
      'aria-label': 'Open chat', 'aria-controls': 'sb-panel', 'aria-expanded': 'false'
    });
    launcher.innerHTML = CHAT_ICON;
    launcher.appendChild(el('span', { 'class': 'sb-unread', 'aria-hidden': 'true', hidden: '' }));

    panel = el('div', {
      id: 'sb-panel', 'class': 'sb-panel', role: 'dialog', 'aria-label': 'Chat with us',
      'data-state': 'idle', hidden: ''
    });

    var header = el('div', { 'class': 'sb-header' });
    header.appendChild(el('h2', { 'class': 'sb-title', id: 'sb-title' }, 'Chat with us'));
    closeBtn = el('button', { type: 'button', 'class': 'sb-close', id: 'sb-close', 'aria-label': 'Close chat' });
    closeBtn.innerHTML = CLOSE_ICON;
    header.appendChild(closeBtn);

    statusEl = el('div', { id: 'sb-status', 'class': 'sb-status', role: 'status', hidden: '' });

    list = el('div', {
      id: 'sb-messages', 'class': 'sb-messages', role: 'log', 'aria-live': 'polite',
      'aria-label': 'Messages', tabindex: '0'
    });

    typingEl = el('div', { id: 'sb-typing', 'class': 'sb-typing', hidden: '' });
    typingLabel = el('span', { 'class': 'sb-sr-only' }, 'typing...');
    typingEl.appendChild(el('span', { 'class': 'sb-dot', 'aria-hidden': 'true' }));
    typingEl.appendChild(el('span', { 'class': 'sb-dot', 'aria-hidden': 'true' }));
    typingEl.appendChild(el('span', { 'class': 'sb-dot', 'aria-hidden': 'true' }));
    typingEl.appendChild(typingLabel);

    noticeEl = el('div', { id: 'sb-notice', 'class': 'sb-notice', role: 'alert', hidden: '' });

    var form = el('form', { 'class': 'sb-compose', id: 'sb-compose' });
    input = el('textarea', {
      id: 'sb-input', 'class': 'sb-input', rows: '1', placeholder: 'Type a message...',
      'aria-label': 'Type a message', autocomplete: 'off'
    });
    sendBtn = el('button', { id: 'sb-send', 'class': 'sb-send', type: 'submit', 'aria-label': 'Send' });
    sendBtn.innerHTML = SEND_ICON;
    form.appendChild(input);
    form.appendChild(sendBtn);

    panel.appendChild(header);
    panel.appendChild(statusEl);
    panel.appendChild(list);
    panel.appendChild(typingEl);
    panel.appendChild(noticeEl);
    panel.appendChild(form);

    root.appendChild(panel);
    root.appendChild(launcher);
    document.body.appendChild(root);

    launcher.addEventListener('click', function () { isOpen ? close() : open(); });
    closeBtn.addEventListener('click', function () { close(); });
    panel.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') { e.preventDefault(); close(); }
    });
    form.addEventListener('submit', function (e) { e.preventDefault(); submit(); });
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submit();
      }
    });
    input.addEventListener('input', function () { autosize(); onUserTyping(); });
    input.addEventListener('blur', function () { stopTyping(); });
  }

  function autosize() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 120) + 'px';
  }

  // ---- panel ----------------------------------------------------------------------------

  var isOpen = false;

  function open() {
    if (!panel) { openOnLoad = true; return; }
    isOpen = true;
    panel.hidden = false;
    root.classList.add('sb-is-open');
    launcher.setAttribute('aria-expanded', 'true');
    launcher.setAttribute('aria-label', 'Close chat');
    setUnread(false);
    ensureConnected();
    scrollToBottom(true);
    try { input.focus({ preventScroll: true }); } catch (e) { input.focus(); }
  }

  function close() {
    if (!panel) { openOnLoad = false; return; }
    var hadFocus = panel.contains(document.activeElement);
    isOpen = false;
    panel.hidden = true;
    root.classList.remove('sb-is-open');
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', 'Open chat');
    stopTyping();
    if (hadFocus) launcher.focus();
  }

  function setUnread(on) {
    var dot = launcher.querySelector('.sb-unread');
    if (dot) dot.hidden = !on;
  }

  // ---- messages -------------------------------------------------------------------------

  var byId = {}; // message id -> element
  var byClientId = {}; // client_id -> element (own messages)

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  }

  function scrollToBottom(force) {
    if (force || nearBottom()) list.scrollTop = list.scrollHeight;
  }

  function formatTime(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    if (isNaN(d.getTime())) return '';
    try { return d.toLocaleString(); } catch (e) { return d.toISOString(); }
  }

  function normalizeAuthor(author) {
    return author === 'customer' || author === 'bot' || author === 'agent' || author === 'system' ? author : 'system';
  }

  function makeMessageEl(author, text) {
    var node = el('div', { 'class': 'sb-msg sb-from-' + author, 'data-author': author, 'data-id': '' });
    node.textContent = text; // white-space: pre-wrap in CSS keeps newlines
    return node;
  }

  // Put node in seq order: after every message with a lower seq, before pending ones (no seq).
  // Failed messages (no seq, not pending) stay where they were and bound nothing.
  function place(node) {
    var seq = node.getAttribute('data-seq');
    var before = null;
    var children = list.children;
    if (seq === null) {
      list.appendChild(node);
      return;
    }
    var n = Number(seq);
    for (var i = 0; i < children.length; i++) {
      var child = children[i];
      if (child === node) continue;
      var childSeq = child.getAttribute('data-seq');
      if (childSeq === null ? child.getAttribute('data-pending') === 'true' : Number(childSeq) > n) {
        before = child;
        break;
      }
    }
    if (before) list.insertBefore(node, before);
    else list.appendChild(node);
  }

  function setConfirmed(node, id, seq) {
    node.setAttribute('data-id', id);
    node.setAttribute('data-seq', String(seq));
    node.classList.remove('sb-pending');
    node.classList.remove('sb-failed');
    node.removeAttribute('data-pending');
    node.removeAttribute('aria-label');
    byId[id] = node;
  }

  // Quick replies offered with the latest message: buttons under it, gone once one is picked
  // or the customer writes.
  var choicesEl = null;
  function clearChoices() {
    if (choicesEl && choicesEl.parentNode) choicesEl.parentNode.removeChild(choicesEl);
    choicesEl = null;
  }
  function showChoices(node, choices) {
    clearChoices();
    if (!Array.isArray(choices) || choices.length === 0) return;
    choicesEl = el('div', { 'class': 'sb-choices', role: 'group', 'aria-label': 'Suggested replies' });
    choices.slice(0, 8).forEach(function (choice) {
      if (!choice || typeof choice.id !== 'string' || typeof choice.label !== 'string') return;
      var button = el('button', { type: 'button', 'class': 'sb-choice', 'data-choice-id': choice.id });
      button.textContent = choice.label;
      button.addEventListener('click', function () { submit(choice); });
      choicesEl.appendChild(button);
    });
    if (node.nextSibling) list.insertBefore(choicesEl, node.nextSibling);
    else list.appendChild(choicesEl);
  }

  // A stored message (history or live `message` frame). Returns true if it was new here.
  function showMessage(m) {
    if (!m || typeof m.id !== 'string') return false;
    var author = normalizeAuthor(m.author);
    if (byId[m.id]) return false; // already shown: delivery is at least once
    var own = author === 'customer' && m.client_id ? byClientId[m.client_id] : null;
    var node;
    if (own) {
      // Our own pending message, confirmed by its stored copy (e.g. the ack got lost).
      node = own;
      removePending(m.client_id);
    } else {
      node = makeMessageEl(author, typeof m.text === 'string' ? m.text : '');
      if (m.client_id) {
        node.setAttribute('data-client-id', m.client_id);
        byClientId[m.client_id] = node;
      }
    }
    setConfirmed(node, m.id, typeof m.seq === 'number' ? m.seq : 0);
    var t = formatTime(m.created_at);
    if (t) node.title = t;
    place(node);
    if (author === 'customer') clearChoices();
    else if (node === list.lastElementChild || (choicesEl && node.nextSibling === choicesEl)) showChoices(node, m.choices);
    return true;
  }

  function showPending(entry) {
    var existing = byClientId[entry.client_id];
    if (existing) return existing;
    var node = makeMessageEl('customer', entry.text);
    node.classList.add('sb-pending');
    node.setAttribute('data-pending', 'true');
    node.setAttribute('data-client-id', entry.client_id);
    node.setAttribute('aria-label', 'Sending: ' + entry.text);
    byClientId[entry.client_id] = node;
    place(node);
    return node;
  }

  function markFailed(clientId) {
    var node = byClientId[clientId];
    removePending(clientId);
    if (!node || node.getAttribute('data-pending') !== 'true') return;
    node.classList.remove('sb-pending');
    node.removeAttribute('data-pending');
    node.classList.add('sb-failed');
    node.setAttribute('aria-label', 'Not sent: ' + node.textContent);
  }

  function clearConversation() {
    // Keep own pending messages (they will be sent in the new conversation); drop the rest.
    var children = Array.prototype.slice.call(list.children);
    for (var i = 0; i < children.length; i++) {
      if (children[i].getAttribute('data-pending') !== 'true') list.removeChild(children[i]);
    }
    byId = {};
    var kept = {};
    for (var cid in byClientId) {
      if (byClientId[cid].getAttribute('data-pending') === 'true') kept[cid] = byClientId[cid];
    }
    byClientId = kept;
    clearRemoteTyping();
  }

  // ---- notices and status -----------------------------------------------------------------

  var noticeTimer = null;
  function notice(text) {
    noticeEl.textContent = text;
    noticeEl.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { noticeEl.hidden = true; noticeEl.textContent = ''; }, 8000);
  }

  function setState(state, text) {
    panel.setAttribute('data-state', state);
    statusEl.textContent = text || '';
    statusEl.hidden = !text;
  }

  // ---- typing ---------------------------------------------------------------------------

  var typingSentAt = 0; // when we last sent typing:true (0 = not typing)
  var typingIdleTimer = null;

  function onUserTyping() {
    clearTimeout(typingIdleTimer);
    if (!input.value.trim()) { stopTyping(); return; }
    var now = Date.now();
    if (now - typingSentAt >= TYPING_THROTTLE_MS) {
      if (send({ type: 'typing', active: true })) typingSentAt = now;
    }
    typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingIdleTimer);
    typingIdleTimer = null;
    if (typingSentAt) {
      typingSentAt = 0;
      send({ type: 'typing', active: false });
    }
  }

  var remoteTyping = {}; // author -> timeout handle

  function setRemoteTyping(author, active) {
    if (remoteTyping[author]) { clearTimeout(remoteTyping[author]); delete remoteTyping[author]; }
    if (active) {
      remoteTyping[author] = setTimeout(function () { setRemoteTyping(author, false); }, REMOTE_TYPING_MS);
    }
    var authors = Object.keys(remoteTyping);
    var wasHidden = typingEl.hidden;
    typingEl.hidden = authors.length === 0;
    if (authors.length) {
      typingEl.setAttribute('data-author', authors[0]);
      typingLabel.textContent = (authors[0] === 'agent' ? 'An agent is typing...' : 'typing...');
      if (wasHidden) scrollToBottom(false);
    } else {
      typingEl.removeAttribute('data-author');
    }
  }

  function clearRemoteTyping() {
    for (var a in remoteTyping) setRemoteTyping(a, false);
  }

  // ---- connection -----------------------------------------------------------------------

  var ws = null;
  var lastSentClientId = null; // the newest message sent on the current socket
  var ready = false; // welcome received on the current socket
  var everConnected = false;
  var attempt = 0; // reconnect attempts since the last welcome (drives the backoff)
  var tokenResets = 0; // sessions restarted after invalid_token since the last welcome
  var reconnectTimer = null;
  var welcomeTimer = null;
  var retryTimer = null;
  var haltedByPolicy = false; // closed with 1008 or 4003: wait for the user before reconnecting
  var sessionRetryMs = 15000; // delay before reconnecting after 4029 (the server's retry_after_ms)
  var visitorId = null;
  var conversationId = null;

  function send(frame) {
    if (!ws || !ready || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); } catch (e) { return false; }
    if (frame.type === 'message') lastSentClientId = frame.client_id;
    return true;
  }

  function ensureConnected() {
    if (ws || reconnectTimer) return;
    connect();
  }

  function connectSoon(now) {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws) return;
    if (now) { attempt = 0; connect(); return; }
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    var delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
    attempt++;
    setState('reconnecting', 'Reconnecting...');
    reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, delay);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    haltedByPolicy = false;
    ready = false;
    setState(everConnected ? 'reconnecting' : 'connecting', everConnected ? 'Reconnecting...' : 'Connecting...');
    var socket;
    try {
      socket = new WebSocket(wsUrl);
    } catch (e) {
      ws = null;
      connectSoon(false);
      return;
    }
    ws = socket;
    lastSentClientId = null;
    var tokenRejected = false;

    socket.onopen = function () {
      if (ws !== socket) return;
      var hello = { type: 'hello', token: loadToken() };
      if (identityToken) hello.identity_token = identityToken;
      else if (identity) hello.identity = identity;
      socket.send(JSON.stringify(hello));
      clearTimeout(welcomeTimer);
      welcomeTimer = setTimeout(function () {
        if (ws === socket && !ready) { try { socket.close(); } catch (e) { /* ignore */ } }
      }, WELCOME_TIMEOUT_MS);
    };

    socket.onmessage = function (event) {
      if (ws !== socket || typeof event.data !== 'string') return;
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'error' && frame.code === 'invalid_token') tokenRejected = true;
      handleFrame(frame);
    };

    socket.onclose = function (event) {
      if (ws !== socket) return;
      clearTimeout(welcomeTimer);
      ws = null;
      ready = false;
      typingSentAt = 0;
      clearRemoteTyping();
      if (event.code === 4001 || tokenRejected) {
        // The token is no good: forget it and start a fresh session right away.
        forgetToken();
        clearConversation();
        // Right away, unless fresh sessions keep being refused (then back off like any failure).
        if (tokenResets < 2) { tokenResets++; connect(); } else connectSoon(false);
      } else if (event.code === 1009) {
        // A frame was too big for the server: take that message back rather than resend it forever.
        if (lastSentClientId) restoreDraft(lastSentClientId);
        notice('That message is too long. Please shorten it.');
        connectSoon(false);
      } else if (event.code === 1008) {
        haltedByPolicy = true;
        setState('closed', 'Disconnected. Send a message to reconnect.');
      } else if (event.code === 4003) {
        // This page's origin may not use this chat server: retrying cannot help.
        haltedByPolicy = true;
        setState('closed', 'Chat is not available on this page.');
      } else if (event.code === 4029) {
        // Too many new sessions from this network: wait the server's delay, then try again.
        clearTimeout(reconnectTimer);
        setState('reconnecting', 'Busy. Reconnecting shortly...');
        reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, Math.max(1000, sessionRetryMs));
      } else {
        connectSoon(false);
      }
    };

    socket.onerror = function () { /* onclose follows */ };
  }

  function handleFrame(f) {
    switch (f.type) {
      case 'welcome': onWelcome(f); break;
      case 'ack': onAck(f); break;
      case 'message': onMessage(f); break;
      case 'typing':
        setRemoteTyping(normalizeAuthor(f.author), !!f.active);
        break;
      case 'draft': showDraft(f); break;
      case 'error': onError(f); break;
      default: break; // unknown frames are ignored (forward compatibility)
    }
  }

  function onWelcome(f) {
    clearTimeout(welcomeTimer);
    clearDraft();
    ready = true;
    everConnected = true;
    attempt = 0;
    tokenResets = 0;
    saveToken(f.token);
    var newVisitor = visitorId !== null && f.visitor_id !== visitorId;
    var newConversation = conversationId && f.conversation_id && f.conversation_id !== conversationId;
    if (newVisitor || newConversation) clearConversation();
    visitorId = f.visitor_id || null;
    if (f.conversation_id) conversationId = f.conversation_id;
    setState('connected', '');

    var history = Array.isArray(f.history) ? f.history : [];
    var stick = nearBottom();
    for (var i = 0; i < history.length; i++) showMessage(history[i]);
    scrollToBottom(stick || history.length > 0);

    // If the user is mid-sentence, tell the server again.
    if (input.value.trim() && document.activeElement === input) onUserTyping();
    resendPending();
  }

  function resendPending() {
    clearTimeout(retryTimer);
    retryTimer = null;
    var pending = loadPending();
    for (var i = 0; i < pending.length; i++) {
      var p = pending[i];
      var node = byClientId[p.client_id];
      if (node && node.getAttribute('data-id')) { removePending(p.client_id); continue; } // already stored
      showPending(p);
      if (!send(messageFrame(p))) break;
    }
  }

  function scheduleRetry(ms) {
    if (retryTimer) return;
    retryTimer = setTimeout(function () {
      retryTimer = null;
      if (ready) resendPending();
    }, ms);
  }

  function onAck(f) {
    if (typeof f.client_id !== 'string' || typeof f.id !== 'string') return;
    var node = byClientId[f.client_id];
    var entry = findPending(f.client_id);
    removePending(f.client_id);
    var shown = byId[f.id];
    if (shown && node && shown !== node) {
      // The stored copy is already on screen (from history or another tab): drop the draft.
      if (node.parentNode) node.parentNode.removeChild(node);
      byClientId[f.client_id] = shown;
      return;
    }
    if (shown) return;
    if (!node) {
      if (!entry) return; // not ours to show (e.g. another tab's message we have not seen yet)
      node = makeMessageEl('customer', entry.text);
      node.setAttribute('data-client-id', f.client_id);
      byClientId[f.client_id] = node;
    }
    var stick = nearBottom();
    setConfirmed(node, f.id, typeof f.seq === 'number' ? f.seq : 0);
    place(node);
    scrollToBottom(stick);
  }

  // The bot's reply while it is written: one bubble, replaced by the next message that is not
  // the customer's (the stored reply, or whatever came instead); an empty draft removes it.
  function showDraft(f) {
    var text = typeof f.text === 'string' ? f.text : '';
    if (!text) { clearDraft(); return; }
    var stick = nearBottom();
    if (!draftEl) {
      draftEl = makeMessageEl(normalizeAuthor(f.author), text);
      draftEl.classList.add('sb-draft');
      draftEl.setAttribute('data-draft', 'true');
      draftEl.setAttribute('aria-busy', 'true');
      list.appendChild(draftEl);
    } else {
      draftEl.textContent = text;
    }
    scrollToBottom(stick);
  }

  function clearDraft() {
    if (draftEl && draftEl.parentNode) draftEl.parentNode.removeChild(draftEl);
    draftEl = null;
  }

  function onMessage(f) {
    var author = normalizeAuthor(f.author);
    if (author !== 'customer') clearDraft();
    var stick = nearBottom();
    var isNew = showMessage(f);
    if (author !== 'customer') setRemoteTyping(author, false);
    if (!isNew) return;
    scrollToBottom(stick);
    if (!isOpen && author !== 'customer') setUnread(true);
  }

  function onError(f) {
    var code = f.code;
    var cid = typeof f.client_id === 'string' ? f.client_id : null;
    switch (code) {
      case 'invalid_token':
        forgetToken();
        return; // the server closes with 4001 and we start over
      case 'hello_required':
        return; // the server closes with 4002 and we reconnect
      case 'invalid_identity':
      case 'identity_expired':
      case 'identity_wrong_origin':
        // The site's token is wrong, expired or for another page: chat as a guest.
        identity = null;
        identityToken = null;
        return;
      case 'rate_limited':
        var retryMs = typeof f.retry_after_ms === 'number' ? f.retry_after_ms : 15000;
        if (!cid) { sessionRetryMs = retryMs; return; } // the server closes with 4029
        notice("You're sending messages too quickly. We'll send it again shortly.");
        scheduleRetry(Math.max(1000, retryMs));
        return;
      case 'unavailable':
        notice("We couldn't send your message just now. Retrying...");
        if (cid) scheduleRetry(3000);
        return;
      case 'text_too_long':
        notice('That message is too long. Please shorten it.');
        if (cid) restoreDraft(cid);
        return;
      default:
        notice(f.message ? String(f.message) : 'Something went wrong (' + String(code) + ').');
        if (cid) markFailed(cid);
    }
  }

  // A message the server refused for good: give the text back to the input to edit (or, if the
  // user is already typing something else, leave it on screen marked as not sent).
  function restoreDraft(cid) {
    var node = byClientId[cid];
    var text = node ? node.textContent : (findPending(cid) || {}).text;
    if (text && !input.value) {
      removePending(cid);
      if (node && node.getAttribute('data-pending') === 'true' && node.parentNode) {
        node.parentNode.removeChild(node);
        delete byClientId[cid];
      }
      input.value = text;
      autosize();
    } else {
      markFailed(cid);
    }
  }

  // ---- sending --------------------------------------------------------------------------

  // A message frame for a pending entry; a picked quick reply carries its choice id.
  function messageFrame(entry) {
    var frame = { type: 'message', client_id: entry.client_id, text: entry.text };
    if (entry.choice_id) frame.choice_id = entry.choice_id;
    return frame;
  }

  function submit(choice) {
    var text = choice ? choice.label : input.value.trim();
    if (!text) return;
    var entry = { client_id: newClientId(), text: text, created_at: new Date().toISOString() };
    if (choice) entry.choice_id = choice.id;
    addPending(entry);
    input.value = '';
    autosize();
    stopTyping();
    showPending(entry);
    scrollToBottom(true);
    clearChoices();
    if (ready) {
      send(messageFrame(entry));
    } else if (haltedByPolicy || !ws) {
      connectSoon(true); // the message goes out after the welcome
    }
    input.focus();
  }

  // ---- start ----------------------------------------------------------------------------

  function start() {
    buildDom();
    // Show anything this browser has not had acknowledged yet.
    var pending = loadPending();
    for (var i = 0; i < pending.length; i++) showPending(pending[i]);
    // Returning visitors connect right away (replies may be waiting); others on first open.
    if (loadToken() || pending.length) ensureConnected();
    if (openOnLoad) open();

    window.addEventListener('online', function () {
      if (!ws && !haltedByPolicy && (everConnected || isOpen)) connectSoon(true);
    });
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible' && !ws && reconnectTimer && !haltedByPolicy) connectSoon(true);
    });
  }

  window.Switchboard = { open: open, close: close, __loaded: true };

  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
})();
