// Shared by every console page: the JSON client (session cookie plus the page's CSRF token),
// small DOM helpers, and the header's sign-out and availability controls. No inline script,
// no eval: the pages run under a strict Content-Security-Policy.
(function () {
  'use strict';

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') : '';
  }

  async function api(method, url, body) {
    var options = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') options.headers['X-CSRF-Token'] = csrf();
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    var response = await fetch(url, options);
    var data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (response.status === 401 && document.body.dataset.page !== 'login') {
      location.href = '/console/login';
    }
    if (!response.ok) {
      var failure = new Error((data && data.error && data.error.message) || response.statusText);
      failure.code = data && data.error && data.error.code;
      failure.status = response.status;
      throw failure;
    }
    return data;
  }

  // el('li', {class: 'x', 'data-id': 1}, 'text', child): attributes set one by one, strings as
  // text nodes (never parsed as HTML).
  function el(tag, attributes) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      var value = attributes[name];
      if (value === null || value === undefined || value === false) return;
      if (name === 'onclick') node.addEventListener('click', value);
      else if (name === 'onsubmit') node.addEventListener('submit', value);
      else if (name === 'onchange') node.addEventListener('change', value);
      else node.setAttribute(name, value === true ? '' : String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) child.forEach(function (c) { if (c) node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
      else node.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) {
    while (node && node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function time(ms) {
    if (!ms) return '';
    var date = new Date(ms);
    return date.toLocaleString();
  }

  function ago(ms, now) {
    if (!ms) return '';
    var seconds = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
    if (seconds < 60) return seconds + 's';
    if (seconds < 3600) return Math.floor(seconds / 60) + 'm';
    if (seconds < 86400) return Math.floor(seconds / 3600) + 'h';
    return Math.floor(seconds / 86400) + 'd';
  }

  function notice(text, kind) {
    var box = document.getElementById('notice');
    if (!box) {
      box = el('div', { id: 'notice', role: 'status', 'aria-live': 'polite' });
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.className = kind || 'info';
    clearTimeout(notice.timer);
    notice.timer = setTimeout(function () { box.textContent = ''; box.className = ''; }, 5000);
  }

  window.SB = { api: api, el: el, clear: clear, time: time, ago: ago, notice: notice, csrf: csrf };

  document.addEventListener('DOMContentLoaded', function () {
    var signOut = document.getElementById('sign-out');
    if (signOut) signOut.addEventListener('click', async function () {
      try { await api('POST', '/console/logout'); } finally { location.href = '/console/login'; }
    });
    var everywhere = document.getElementById('sign-out-everywhere');
    if (everywhere) everywhere.addEventListener('click', async function () {
      try { await api('POST', '/console/api/me/sign-out-everywhere'); } finally { location.href = '/console/login'; }
    });
    var availability = document.getElementById('availability');
    if (availability) {
      availability.value = document.body.dataset.availability || 'offline';
      availability.addEventListener('change', async function () {
        try {
          await api('POST', '/console/api/me/availability', { availability: availability.value });
          notice('You are ' + availability.value);
        } catch (error) { notice(error.message, 'error'); }
      });
    }
  });
})();
