// The sign-in form: POST /console/login, then the page the person's role opens.
(function () {
  'use strict';
  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('login-form');
    var error = document.getElementById('login-error');
    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      error.textContent = '';
      try {
        var answer = await SB.api('POST', '/console/login', {
          email: document.getElementById('login-email').value,
          password: document.getElementById('login-password').value,
        });
        location.href = answer.home;
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
  });
})();
