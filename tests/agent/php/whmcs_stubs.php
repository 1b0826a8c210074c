<?php
// Just enough of WHMCS for deploy/whmcs/invoice_sync.php: add_hook, localAPI('GetInvoice'),
// logActivity and Capsule::table('tblinvoices') over a JSON file that stands for the database:
// every query reads it (under a lock), every update rewrites it, so another process (the test,
// playing an admin or WHMCS itself) can write the same invoice while the hook runs.
namespace WHMCS\Database {
    class Builder
    {
        private $table;
        private $where = array();

        public function __construct($table)
        {
            $this->table = $table;
        }

        public function where($column, $value)
        {
            $this->where[] = array($column, $value);
            return $this;
        }

        private function matches($row)
        {
            foreach ($this->where as $w) {
                if ((string) $row[$w[0]] !== (string) $w[1]) {
                    return false;
                }
            }
            return true;
        }

        public function update(array $values)
        {
            // One UPDATE ... WHERE is atomic in MySQL: read, match and write under one lock.
            $handle = stub_db_lock(LOCK_EX);
            $rows = stub_db_read();
            $n = 0;
            foreach ($rows as $i => $row) {
                if ($this->matches($row)) {
                    $rows[$i] = array_merge($row, $values);
                    $n++;
                }
            }
            file_put_contents($GLOBALS['STUB_DB'], json_encode($rows));
            flock($handle, LOCK_UN);
            fclose($handle);
            return $n;
        }

        public function value($column)
        {
            foreach (stub_db_rows() as $row) {
                if ($this->matches($row)) {
                    return $row[$column];
                }
            }
            return null;
        }
    }

    class Capsule
    {
        public static function table($name)
        {
            return new Builder($name);
        }
    }
}

namespace {
    define('WHMCS', true);
    $GLOBALS['STUB_HOOKS'] = array();
    $GLOBALS['STUB_LOG'] = array();
    $GLOBALS['STUB_DB'] = null; // path of the JSON file holding tblinvoices

    function stub_db_lock($mode)
    {
        $handle = fopen($GLOBALS['STUB_DB'] . '.lock', 'c');
        flock($handle, $mode);
        return $handle;
    }

    function stub_db_read()
    {
        return json_decode(file_get_contents($GLOBALS['STUB_DB']), true);
    }

    /** Return tblinvoices as it is in the "database" now. */
    function stub_db_rows()
    {
        $handle = stub_db_lock(LOCK_SH);
        $rows = stub_db_read();
        flock($handle, LOCK_UN);
        fclose($handle);
        return $rows;
    }

    function add_hook($event, $priority, $callback)
    {
        $GLOBALS['STUB_HOOKS'][$event][] = $callback;
    }

    function run_hook($event, array $vars)
    {
        foreach (isset($GLOBALS['STUB_HOOKS'][$event]) ? $GLOBALS['STUB_HOOKS'][$event] : array() as $cb) {
            $cb($vars);
        }
    }

    function logActivity($message)
    {
        $GLOBALS['STUB_LOG'][] = $message;
    }

    function localAPI($command, array $values)
    {
        if ($command !== 'GetInvoice') {
            return array('result' => 'error', 'message' => "stub: $command not implemented");
        }
        foreach (stub_db_rows() as $row) {
            if ((int) $row['id'] === (int) $values['invoiceid']) {
                return array_merge(array('result' => 'success', 'invoiceid' => $row['id']), $row);
            }
        }
        return array('result' => 'error', 'message' => 'Invoice ID Not Found');
    }
}
