<?php
/**
 * invoice-sync addon: take an invoice's legal number from the coordinator and write it.
 *
 * One numbering routine, two transports:
 *   - "coordinator": HTTPS straight to the coordinator with this system's agent token
 *     (TLS always verified; plain http only to a loopback address);
 *   - "sidecar": the local agent sidecar (`invoice-sync-agent serve`), which holds the token.
 * Every request carries the same (document, reference) for the same invoice, and the
 * coordinator answers a repeated reference with the number it already gave: retrying after a
 * timeout, a lost connection or a 503 never burns a second number.
 *
 * Fails closed: on any error the invoice stays unnumbered, the reason goes to WHMCS's activity
 * log (Utilities → Logs → Activity Log), and the next attempt (the other hook of the event, the
 * poller, or a retry by hand from the module's page) gets the same number.
 */

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

const INVOICE_SYNC_ADDON_MODULE = 'invoice_sync';
const INVOICE_SYNC_ADDON_TABLE = 'mod_invoice_sync';
const INVOICE_SYNC_ADDON_TOKEN_PREFIX = 'isg_';

/** A failure the admin can act on: its message goes to the activity log as it is. */
class InvoiceSyncAddonError extends RuntimeException
{
}

/** Return the module's settings (as saved in System Settings → Addon Modules), with defaults. */
function invoice_sync_addon_settings()
{
    $stored = array();
    foreach (Capsule::table('tbladdonmodules')->where('module', INVOICE_SYNC_ADDON_MODULE)->get() as $row) {
        $row = (array) $row;
        $stored[$row['setting']] = (string) $row['value'];
    }
    $settings = array_merge(array(
        'transport' => 'coordinator',
        'coordinator_url' => '',
        'agent_token' => '',
        'sidecar' => 'http://127.0.0.1:8765',
        'number_on' => 'paid',
        'timeout' => '10',
        'attempts' => '3',
        'ca_bundle' => '',
    ), array_filter($stored, 'strlen'));
    $settings['agent_token'] = invoice_sync_addon_plain_token($settings['agent_token']);
    return $settings;
}

/**
 * Return the agent token in clear. WHMCS versions that encrypt password-type settings at rest
 * hand them to _output() decrypted but leave them encrypted in tbladdonmodules, where hooks
 * read them; an agent token always starts with "isg_", so only a value without it is decrypted.
 */
function invoice_sync_addon_plain_token($value)
{
    $value = trim((string) $value);
    if ($value === '' || strpos($value, INVOICE_SYNC_ADDON_TOKEN_PREFIX) === 0) {
        return $value;
    }
    if (function_exists('decrypt')) {
        $plain = trim((string) decrypt($value));
        if (strpos($plain, INVOICE_SYNC_ADDON_TOKEN_PREFIX) === 0) {
            return $plain;
        }
    }
    return $value; // not an agent token: the coordinator will say so (HTTP 401), and we log it
}

/** Whether $host names this machine (plain http is allowed there only). */
function invoice_sync_addon_is_loopback($host)
{
    $host = trim(strtolower((string) $host), '[]');
    return $host === 'localhost' || $host === '::1' || preg_match('/^127\.\d+\.\d+\.\d+$/', $host) === 1;
}

/**
 * Send one JSON request through the configured transport, retrying what is safe to retry.
 *
 * Returns array(HTTP status, decoded body). Throws InvoiceSyncAddonError when no answer came
 * (after the retries) or the answer is not the coordinator's JSON.
 */
function invoice_sync_addon_request(array $settings, $method, $path, $body = null)
{
    $attempts = max(1, (int) $settings['attempts']);
    $last = '';
    for ($attempt = 1; $attempt <= $attempts; $attempt++) {
        if ($attempt > 1) {
            usleep((int) (min(4, 0.5 * pow(2, $attempt - 2)) * 1000000));
        }
        list($code, $answer, $error) = invoice_sync_addon_send($settings, $method, $path, $body);
        if ($error !== null) {
            $last = $error;
            continue; // no answer: connection refused, reset or timed out
        }
        if (in_array($code, array(429, 502, 503, 504), true)) {
            $last = invoice_sync_addon_describe($code, $answer);
            continue; // the coordinator asked us to come back (e.g. durability not confirmed)
        }
        return array($code, $answer);
    }
    throw new InvoiceSyncAddonError("no answer after $attempts attempt(s): $last");
}

/** One HTTP exchange: array(code, decoded JSON or null, transport error or null). */
function invoice_sync_addon_send(array $settings, $method, $path, $body)
{
    $headers = array('Accept: application/json');
    $ch = curl_init();
    if ($settings['transport'] === 'sidecar') {
        $base = $settings['sidecar'];
        if (strpos($base, 'unix:') === 0) {
            curl_setopt($ch, CURLOPT_UNIX_SOCKET_PATH, substr($base, 5));
            $base = 'http://localhost';
        }
        curl_setopt($ch, CURLOPT_PROXY, ''); // the sidecar is local: never through a proxy
    } else {
        $base = invoice_sync_addon_coordinator_url($settings);
        if ($settings['agent_token'] === '') {
            throw new InvoiceSyncAddonError('no agent token is set (System Settings → Addon Modules → invoice-sync)');
        }
        $headers[] = 'Authorization: Bearer ' . $settings['agent_token'];
        curl_setopt($ch, CURLOPT_SSL_VERIFYPEER, true);
        curl_setopt($ch, CURLOPT_SSL_VERIFYHOST, 2);
        if ($settings['ca_bundle'] !== '') {
            curl_setopt($ch, CURLOPT_CAINFO, $settings['ca_bundle']);
        }
    }
    if ($body !== null) {
        $headers[] = 'Content-Type: application/json';
        curl_setopt($ch, CURLOPT_POSTFIELDS, json_encode($body));
    }
    curl_setopt_array($ch, array(
        CURLOPT_URL => rtrim($base, '/') . $path,
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_HTTPHEADER => $headers,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => max(1, (int) $settings['timeout']),
        CURLOPT_CONNECTTIMEOUT => max(1, (int) $settings['timeout']),
        CURLOPT_FOLLOWLOCATION => false,
    ));
    $raw = curl_exec($ch);
    $code = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    if ($raw === false) {
        return array(0, null, "unreachable ($error)");
    }
    $answer = json_decode($raw, true);
    return array($code, is_array($answer) ? $answer : null, null);
}

/** The coordinator's base URL, refused unless it is https (or http to this very machine). */
function invoice_sync_addon_coordinator_url(array $settings)
{
    $url = trim($settings['coordinator_url']);
    $parts = parse_url($url);
    if ($url === '' || $parts === false || !isset($parts['scheme'], $parts['host'])) {
        throw new InvoiceSyncAddonError('the coordinator URL is not set or not a URL (System Settings → Addon Modules → invoice-sync)');
    }
    $scheme = strtolower($parts['scheme']);
    if ($scheme !== 'https' && !($scheme === 'http' && invoice_sync_addon_is_loopback($parts['host']))) {
        throw new InvoiceSyncAddonError("the coordinator URL must start with https:// (got $scheme://): the agent token must not cross the network in clear");
    }
    return $url;
}

/** "HTTP 409: <the coordinator's message>" for the activity log. */
function invoice_sync_addon_describe($code, $answer)
{
    $message = is_array($answer) && isset($answer['message']) ? $answer['message'] : 'no JSON in the answer';
    if ($code === 401) {
        return "HTTP 401: $message — the agent token was refused: set this system's agent token in System Settings → Addon Modules → invoice-sync";
    }
    return "HTTP $code: $message";
}

/** Call an endpoint that must answer one of $expected; return its JSON body. */
function invoice_sync_addon_call(array $settings, $method, $coordinatorPath, $sidecarPath, $body, array $expected)
{
    $path = $settings['transport'] === 'sidecar' ? $sidecarPath : $coordinatorPath;
    list($code, $answer) = invoice_sync_addon_request($settings, $method, $path, $body);
    if (!in_array($code, $expected, true) || !is_array($answer)) {
        throw new InvoiceSyncAddonError(invoice_sync_addon_describe($code, $answer));
    }
    return $answer;
}

function invoice_sync_addon_allocate(array $settings, array $request)
{
    $allocation = invoice_sync_addon_call($settings, 'POST', '/v1/allocations', '/allocate', $request, array(200, 201));
    foreach (array('id', 'formatted', 'number', 'sequence', 'period', 'reference') as $field) {
        if (!isset($allocation[$field]) || (string) $allocation[$field] === '') {
            throw new InvoiceSyncAddonError("the answer has no '$field': not an invoice-sync coordinator?");
        }
    }
    if ((string) $allocation['reference'] !== $request['reference']) {
        throw new InvoiceSyncAddonError("the answer is for reference '{$allocation['reference']}', not '{$request['reference']}'");
    }
    return $allocation;
}

function invoice_sync_addon_allocation_path($id, $suffix)
{
    return '/v1/allocations/' . rawurlencode($id) . $suffix;
}

function invoice_sync_addon_confirm(array $settings, array $allocation)
{
    $id = $allocation['id'];
    return invoice_sync_addon_call($settings, 'POST', invoice_sync_addon_allocation_path($id, '/confirm'), '/confirm',
        $settings['transport'] === 'sidecar'
            ? array('id' => $id, 'invoicenum' => $allocation['formatted'])
            : array('invoicenum' => $allocation['formatted']),
        array(200));
}

function invoice_sync_addon_void(array $settings, array $allocation, $reason)
{
    $id = $allocation['id'];
    return invoice_sync_addon_call($settings, 'POST', invoice_sync_addon_allocation_path($id, '/void'), '/void',
        $settings['transport'] === 'sidecar' ? array('id' => $id, 'reason' => $reason) : array('reason' => $reason),
        array(200));
}

/** Record (or update) what happened to an invoice's number in the module's own table. */
function invoice_sync_addon_record($invoiceId, array $allocation, $status, $message = '')
{
    $now = gmdate('Y-m-d H:i:s');
    $row = array(
        'allocation_id' => (string) $allocation['id'],
        'sequence' => (string) $allocation['sequence'],
        'period' => (string) $allocation['period'],
        'number' => (int) $allocation['number'],
        'formatted' => (string) $allocation['formatted'],
        'status' => $status,
        'message' => substr((string) $message, 0, 250),
        'updated_at' => $now,
    );
    $table = Capsule::table(INVOICE_SYNC_ADDON_TABLE);
    if ($table->where('invoiceid', $invoiceId)->where('allocation_id', $row['allocation_id'])->exists()) {
        Capsule::table(INVOICE_SYNC_ADDON_TABLE)->where('invoiceid', $invoiceId)
            ->where('allocation_id', $row['allocation_id'])->update($row);
    } else {
        Capsule::table(INVOICE_SYNC_ADDON_TABLE)->insert(array_merge($row, array(
            'invoiceid' => $invoiceId, 'created_at' => $now,
        )));
    }
}

/**
 * Refuse a number that went backwards: this installation already received a higher (or the
 * same) number of the same sequence and period for another invoice. That happens only when the
 * coordinator's data is behind reality (an old backup restored), so writing it would print a
 * number twice.
 */
function invoice_sync_addon_check_forward($invoiceId, array $allocation)
{
    $highest = Capsule::table(INVOICE_SYNC_ADDON_TABLE)
        ->where('sequence', (string) $allocation['sequence'])
        ->where('period', (string) $allocation['period'])
        ->where('invoiceid', '!=', $invoiceId)
        ->max('number');
    if ($highest !== null && (int) $allocation['number'] <= (int) $highest) {
        throw new InvoiceSyncAddonError(sprintf(
            'the coordinator answered %s (number %d), but this installation already received number %d of %s %s for another invoice: the coordinator\'s data may be behind (restored from an old backup?). Not written; see the invoice-sync recovery guide',
            $allocation['formatted'], (int) $allocation['number'], (int) $highest,
            $allocation['sequence'], $allocation['period']));
    }
}

/** Number one WHMCS invoice, if it has no number yet. Never throws: failures are logged. */
function invoice_sync_addon_number($invoiceId, array $settings = null)
{
    $invoiceId = (int) $invoiceId;
    $step = 'reading the invoice';
    $allocation = null;
    try {
        $settings = $settings === null ? invoice_sync_addon_settings() : $settings;
        $invoice = localAPI('GetInvoice', array('invoiceid' => $invoiceId));
        if (!isset($invoice['result']) || $invoice['result'] !== 'success') {
            throw new InvoiceSyncAddonError(isset($invoice['message']) ? $invoice['message'] : 'GetInvoice failed');
        }
        if (trim((string) $invoice['invoicenum']) !== '') {
            return; // numbered already (by us, the poller, or an admin): never renumber
        }
        // Credit notes are invoices with a negative total (modules that add them do so).
        $request = array(
            'document' => ((float) $invoice['total'] < 0) ? 'credit_note' : 'invoice',
            'reference' => (string) $invoiceId,
        );
        $date = substr((string) $invoice['date'], 0, 10);
        if (preg_match('/^\d{4}-\d{2}-\d{2}$/', $date) && $date !== '0000-00-00') {
            $request['date'] = $date; // the document date picks the numbering period
        }

        $step = 'taking a number';
        $allocation = invoice_sync_addon_allocate($settings, $request);
        $number = (string) $allocation['formatted'];
        invoice_sync_addon_check_forward($invoiceId, $allocation);
        invoice_sync_addon_record($invoiceId, $allocation, 'issued');

        $step = "writing $number";
        // Only into an unnumbered invoice: the poller or an admin may have been faster.
        Capsule::table('tblinvoices')->where('id', $invoiceId)->where('invoicenum', '')
            ->update(array('invoicenum' => $number));
        $written = (string) Capsule::table('tblinvoices')->where('id', $invoiceId)->value('invoicenum');
        if ($written !== $number) {
            $step = "voiding $number";
            $reason = "invoice $invoiceId was numbered '$written' by someone else";
            invoice_sync_addon_void($settings, $allocation, $reason);
            invoice_sync_addon_record($invoiceId, $allocation, 'void', $reason);
            logActivity("invoice-sync: invoice $invoiceId already had number '$written'; voided $number");
            return;
        }

        $step = "confirming $number";
        invoice_sync_addon_confirm($settings, $allocation);
        invoice_sync_addon_record($invoiceId, $allocation, 'confirmed');
    } catch (Throwable $e) {
        $message = "invoice-sync: invoice $invoiceId, $step failed: " . $e->getMessage()
            . ' (left as it is; the next attempt gets the same number)';
        if ($allocation !== null) {
            try {
                invoice_sync_addon_record($invoiceId, $allocation, 'failed', $e->getMessage());
            } catch (Throwable $ignored) {
                // the activity log below still says what happened
            }
        }
        logActivity($message);
    }
}
